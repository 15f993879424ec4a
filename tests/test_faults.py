"""Faults the server survives (in-process backend with injected bad replies; the Flower backends
produce the same Reply objects): non-finite replies are refused and logged, a round aggregates the
sites it has when at least --min-sites answered, fewer stops the run with its finished steps kept."""
from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import small_config


def _flaky(bad: dict):
    """An in-process backend factory whose fit replies are spoiled as ``bad`` says:
    {(phase, round_or_tour, device): "nan-weights" | "nan-metric" | "fail"}."""
    from fedtiny.trainer.backends import Backend
    from fedtiny.trainer.pipeline import InProcess
    from fedtiny.trainer.strategies import Reply

    class Spoiled(Backend):
        def __init__(self, inner):
            self.inner = inner

        def fit(self, tasks):
            out = []
            for t, r in zip(tasks, self.inner.fit(tasks)):
                how = bad.get((t.config["phase"], t.config.get("round", t.config.get("tour")), t.device))
                if how == "nan-weights":
                    r = Reply(r.device, [np.full_like(w, np.nan) for w in r.weights], r.metrics)
                elif how == "nan-metric":
                    r = Reply(r.device, r.weights, {**r.metrics, "acc": float("nan")})
                elif how == "fail":
                    r = Reply(r.device, error="no reply within 5 s")
                out.append(r)
            return out

        def evaluate(self, tasks):
            return self.inner.evaluate(tasks)

        def finalize(self, tasks):
            return self.inner.finalize(tasks)

    class Factory(InProcess):
        def connect(self, run):
            return Spoiled(super().connect(run))

    return Factory()


def _lines(run):
    return [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]


def test_bad_and_missing_replies_are_logged_and_the_run_goes_on(tmp_path):
    from fedtiny.trainer.pipeline import train

    bad = {("phase2", 1, 1): "nan-weights", ("phase2", 2, 0): "nan-metric", ("phase1", 0, 2): "fail"}
    rep = train(small_config(), tmp_path / "r", backend=_flaky(bad), min_sites=2)
    assert len(rep["devices"]) == 3
    lines = _lines(tmp_path / "r")
    p1 = [x for x in lines if x["phase"] == "phase1"]
    assert [x.get("failed") is not None for x in p1] == [False, False, True]
    r1, r2 = [x for x in lines if x["phase"] == "phase2"]
    assert r1["devices"] == [0, 2] and "non-finite" in r1["failed"]["1"] and len(r1["weights"]) == 2
    assert r2["devices"] == [1, 2] and "not finite" in r2["failed"]["0"]
    assert sum(r1["weights"]) == pytest.approx(1.0)
    assert len(r1["global_val_acc_per_device"]) == 3        # every site evaluates the new model


def test_too_few_sites_stop_the_run_and_resume_finishes_it(tmp_path):
    from fedtiny.trainer.pipeline import RunError, train

    out = tmp_path / "r"
    with pytest.raises(RunError, match=r"round 2: only 2 of 3 sites.*--min-sites 3.*device 1: no reply"):
        train(small_config(), out, backend=_flaky({("phase2", 2, 1): "fail"}), min_sites=3)
    done = json.loads((out / "state" / "progress.json").read_text())["done"]
    assert done == ["phase0", "phase1", "round01"]            # finished steps are kept
    rep = train(small_config(), out, resume=True, min_sites=3)  # the site is back
    assert len(rep["devices"]) == 3
    ref = train(small_config(), tmp_path / "ref")
    assert [d["model_sha256"] for d in rep["devices"]] == [d["model_sha256"] for d in ref["devices"]]
