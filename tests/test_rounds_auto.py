"""``--rounds auto``: Phase 2 stops on the global validation loss, carries the best round's model
on, logs the curve and the chosen round, and a run stopped one round before the stop and resumed
ends with the same numbers as an uninterrupted one. Also the fleet threshold's metrics
line and the detection figures of the report."""
from __future__ import annotations

import json

from conftest import report_without_timings, small_config

from fedtiny.trainer.pipeline import train
from fedtiny.trainer.stopping import best_round, should_stop


def _lines(run):
    return [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]


def test_rounds_auto_stops_at_the_rule_and_resumes_alike(tmp_path):
    cfg = small_config(rounds="auto", patience=1, max_rounds=4)
    a = tmp_path / "a"
    rep = train(cfg, a)
    lines = _lines(a)
    rounds = [x for x in lines if x.get("phase") == "phase2"]
    curve = [x["global_val_loss"] for x in rounds]
    # the rule, replayed on the logged curve: it stopped exactly where the rule says, not before
    assert should_stop(curve, 1, 4) and not any(should_stop(curve[:r], 1, 4) for r in range(1, len(curve)))
    stop = [x for x in lines if x.get("phase") == "stopping"]
    assert len(stop) == 1 and stop[0]["chosen_round"] == best_round(curve) == rep["phase2"]["chosen_round"]
    assert stop[0]["curve"] == curve and rep["phase2"]["rounds_run"] == len(curve)
    assert rep["phase2"]["val_loss"] == curve
    # every device reports its threshold's origin and its false-alarm / detection rates
    assert {d["threshold_origin"] for d in rep["devices"]} <= {"local", "fleet", "default"}
    assert all(d["int8_far"] is None or 0 <= d["int8_far"] <= 1 for d in rep["devices"])
    assert rep["summary"]["fleet_int8_acc"] is not None
    fleet = [x for x in lines if x.get("phase") == "fleet_threshold"]
    assert len(fleet) == 1 and fleet[0]["sites"] == cfg.devices

    # interrupted one round before the stop: the resumed run decides from the persisted curve and
    # best round's weights
    b = tmp_path / "b"
    train(cfg, b, until=f"round{len(curve) - 1:02d}")
    train(cfg, b, resume=True)
    assert report_without_timings(b) == report_without_timings(a)
    assert _lines(b) == lines
