"""End-to-end trainer behaviour on small built-in fleets (real TF training, INT8, tflite-micro)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import report_without_timings as _report, small_config



def test_run_directory_layout(small_run):
    assert (small_run / "config.json").exists()
    lines = [json.loads(x) for x in (small_run / "metrics.jsonl").read_text().splitlines()]
    assert [x["phase"] for x in lines][:2] == ["phase0", "phase1"]
    rounds = [x for x in lines if x["phase"] == "phase2"]
    assert [x["round"] for x in rounds] == [1, 2]
    for r in rounds:
        assert len(r["weights"]) == len(r["cos"]) == len(r["perf"]) == 3
        assert sum(r["weights"]) == pytest.approx(1.0)
    rep = json.loads((small_run / "report.json").read_text())
    assert len(rep["devices"]) == 3
    for d in range(3):
        ddir = small_run / "devices" / f"dev{d:02d}"
        for f in ("model_float.keras", "model_int8.tflite", "device.json", "test_split.npz"):
            assert (ddir / f).stat().st_size > 0
        info = json.loads((ddir / "device.json").read_text())
        assert info["model_bytes"] == (ddir / "model_int8.tflite").stat().st_size
        assert 1000 < info["arena_bytes"] < 64000
        assert 0.0 <= info["threshold"] <= 1.0
        z = np.load(ddir / "test_split.npz")
        assert z["x_int8"].dtype == np.int8 and z["x_int8"].shape == z["x"].shape
        assert np.mean(z["pred_int8"] == z["y"]) == pytest.approx(info["int8_acc"])


def test_int8_weights_stay_under_20_kb(small_run):
    for d in range(3):
        tfl = (small_run / "devices" / f"dev{d:02d}" / "model_int8.tflite").read_bytes()
        assert len(tfl) < 20 * 1024


def test_phase3_leaves_extractor_bit_identical(small_run):
    import keras

    from fedtiny.trainer.model import n_extractor_arrays
    from fedtiny.trainer.rundir import load_weights

    state = small_run / "state"
    prog = json.loads((state / "progress.json").read_text())
    global_w = load_weights(state / prog["weights"])
    for d in range(3):
        m = keras.models.load_model(small_run / "devices" / f"dev{d:02d}" / "model_float.keras")
        w = m.get_weights()
        n_fx = n_extractor_arrays(m)
        assert n_fx > 0
        for a, b in zip(w[:n_fx], global_w[:n_fx]):
            assert np.array_equal(a, b)
        # and the head did move
        assert any(not np.array_equal(a, b) for a, b in zip(w[n_fx:], global_w[n_fx:]))


def test_same_seed_same_numbers(small_run, tmp_path):
    from fedtiny.trainer.pipeline import train

    train(small_config(), tmp_path / "again")
    a, b = _report(small_run), _report(tmp_path / "again")
    assert a == b                                  # accuracies, thresholds, model bytes and hashes
    other = train(small_config(seed=1), tmp_path / "seed1")
    assert [d["model_sha256"] for d in other["devices"]] != [d["model_sha256"] for d in a["devices"]]


def _cli(args, env=None):
    code = "import sys; from fedtiny.cli import main; sys.exit(main())"
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, timeout=600)


def test_resume_after_kill_equals_uninterrupted(small_run, tmp_path, monkeypatch):
    """Die (exit without cleanup) right after Phase-2 round 1, then after device 0; resume each time."""
    from fedtiny.trainer import pipeline

    out = tmp_path / "killed"
    cfg = small_config()
    for crash_at in ("round01", "dev00"):
        code = ("import sys; from pathlib import Path; from fedtiny.trainer.pipeline import train;"
                "sys.path.insert(0, %r); from conftest import small_config;"
                "train(small_config(), Path(%r), resume=Path(%r, 'config.json').exists())"
                % (str(Path(__file__).parent), str(out), str(out)))
        p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600,
                           env={**os.environ, "FEDTINY_CRASH_AFTER": crash_at})
        assert p.returncode == 137, p.stderr[-2000:]
        done = json.loads((out / "state" / "progress.json").read_text())["done"]
        assert done[-1] == crash_at
        assert not (out / "report.json").exists()
    pipeline.train(cfg, out, resume=True)
    assert _report(out) == _report(small_run)
    lines = (out / "metrics.jsonl").read_text().splitlines()
    assert lines == (small_run / "metrics.jsonl").read_text().splitlines()


def test_fedprox_with_mu_zero_equals_fedavg(tmp_path):
    from fedtiny.trainer.pipeline import train

    a = train(small_config(method="fedavg", devices=2), tmp_path / "avg")
    b = train(small_config(method="fedprox", mu=0.0, devices=2), tmp_path / "prox0")
    assert [d["model_sha256"] for d in a["devices"]] == [d["model_sha256"] for d in b["devices"]]
    c = train(small_config(method="fedprox", mu=1.0, devices=2), tmp_path / "prox1")
    assert [d["model_sha256"] for d in c["devices"]] != [d["model_sha256"] for d in a["devices"]]


def test_threshold_is_tuned_on_the_int8_scores(small_run):
    """The threshold each device records is the one that maximises the metric on the INT8 model's
    dequantized scores of its threshold-validation windows (what the board decides on)."""
    from fedtiny.trainer.config import TrainConfig
    from fedtiny.trainer.pipeline import prepare
    from fedtiny.trainer.quantize import quant_params, quantize_input
    from fedtiny.trainer.tflm import run_int8
    from fedtiny.trainer.threshold import dequantize, tune_threshold

    cfg = TrainConfig.from_dict(json.loads((small_run / "config.json").read_text()))
    splits = prepare(cfg).splits
    tuned = 0
    for d in range(cfg.devices):
        ddir = small_run / "devices" / f"dev{d:02d}"
        info = json.loads((ddir / "device.json").read_text())
        if info["threshold_tuned_on"] is None:
            continue
        assert info["threshold_tuned_on"] == "int8"
        tfl = (ddir / "model_int8.tflite").read_bytes()
        q = quant_params(tfl)
        val = splits[d].phase3_val
        out = run_int8(tfl, quantize_input(val.x, q["input_scale"], q["input_zero_point"]))
        scores = dequantize(out, q["output_scale"], q["output_zero_point"])
        t, v = tune_threshold(scores, val.y, cfg.threshold_metric)
        assert info["threshold"] == t and info["threshold_metric_value"] == pytest.approx(v)
        # the float figure: the float model at its own threshold, tuned the same way on its scores
        import keras

        from fedtiny.trainer.threshold import decide

        fm = keras.models.load_model(ddir / "model_float.keras")
        tf_, _ = tune_threshold(fm.predict(val.x, verbose=0), val.y, cfg.threshold_metric)
        assert info["float_threshold"] == pytest.approx(tf_, abs=1e-6)
        z = np.load(ddir / "test_split.npz")
        float_acc = np.mean(decide(fm.predict(z["x"], verbose=0), info["float_threshold"]) == z["y"])
        assert info["float_acc"] == pytest.approx(float_acc, abs=1.5 / len(z["y"]))
        # on the grid of scores the board can give (or the 0.5 default among the candidates)
        p0 = (1.0 - t) / q["output_scale"] + q["output_zero_point"]
        assert t == 0.5 or t == 1.0 or abs(p0 - round(p0)) < 1e-6
        tuned += 1
    assert tuned >= 1


def test_warning_lines_are_capped():
    from fedtiny.trainer.pipeline import warning_lines

    ws = [f"device {i}: something" for i in range(30)]
    lines = warning_lines(ws, limit=5)
    assert lines[:5] == [f"warning: device {i}: something" for i in range(5)]
    assert len(lines) == 6 and "25 more" in lines[5] and "all 30" in lines[5]
    assert warning_lines(ws[:5], limit=5) == lines[:5]
