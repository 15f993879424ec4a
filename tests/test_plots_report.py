"""Plots and the HTML report: readable text on heatmaps, integer ticks, labelled colorbars, honest
accuracy ranges, float beside INT8, coinciding curves, the bench section, unwritable output."""
from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from fedtiny import plots

NAMES = ["no_fault", "LG", "LL"]


@pytest.fixture
def figures(monkeypatch):
    """Every figure a plotting function makes, drawn (ticks computed) instead of closed."""
    made = []

    def keep(fig, path):
        fig.canvas.draw()
        made.append(fig)
        return path

    monkeypatch.setattr(plots, "_save", keep)
    yield made
    plots._plt().close("all")


def _colorbar_axes(fig):
    return [a for a in fig.axes if a.get_label() == "<colorbar>"]


def _fake_run(root: Path, n_dev: int = 2, rounds: int = 3) -> Path:
    """A finished run directory with just what the report reads (no training)."""
    run = root / "run"
    rng = np.random.default_rng(0)
    devices = []
    for d in range(n_dev):
        ddir = run / "devices" / f"dev{d:02d}"
        ddir.mkdir(parents=True)
        y = rng.integers(0, 3, 40)
        pred = np.where(rng.random(40) < 0.8, y, (y + 1) % 3)
        np.savez(ddir / "test_split.npz", y=y, pred_int8=pred)
        devices.append({"device": d, "float_acc": 0.8125, "int8_acc": float(np.mean(pred == y)),
                        "threshold": 0.5, "n_test": 40, "model_bytes": 11568, "arena_bytes": 4784,
                        "model_sha256": f"{d:064x}"})
    metrics = [{"phase": "phase2", "round": r, "global_val_acc": 0.80 + 0.01 * r,
                "weights": [1 / n_dev] * n_dev, "cos": [0.5] * n_dev} for r in range(1, rounds + 1)]
    (run / "metrics.jsonl").write_text("".join(json.dumps(m) + "\n" for m in metrics))
    (run / "config.json").write_text(json.dumps({"method": "fedmetaalign", "mu": 0.01}))
    (run / "report.json").write_text(json.dumps({
        "method": "fedmetaalign", "dataset": "electrical", "seed": 0, "class_names": NAMES,
        "devices": devices,
        "summary": {"mean_float_acc": 0.8125, "mean_int8_acc": 0.8, "max_int8_drop_pp": 1.0,
                    "max_model_bytes": 11568, "max_arena_bytes": 4784}}))
    return run


def _bench_json(run: Path, device: int = 1, **over) -> Path:
    """A bench result written the way ``fedtiny bench`` writes it (BenchResult.to_dict)."""
    from fedtiny.bench.host import BenchResult

    r = BenchResult(port="/dev/ttyACM0", board="nano33ble", device_id=device, protocol_version=2,
                    clock="device", model_hash=f"{device:064x}", arena_bytes=7008, threshold=0.5,
                    threshold_origin="local",
                    n_classes=3, n_test=40, run_dir=str(run), expected_model_hash=f"{device:064x}",
                    hash_ok=True, n=40, correct=29, accuracy=29 / 40,
                    latency_us={"min": 1200, "mean": 1311, "p50": 1304, "p95": 1402, "max": 1499,
                                "clock": "device"},
                    expected_accuracy=30 / 40,
                    decision_mismatches=[{"index": 3, "device_pred": 1, "host_pred": 2, "label": 2}],
                    finished_at="2026-11-30T14:05:09+00:00")
    for k, v in over.items():
        setattr(r, k, v)
    path = run / "bench" / f"dev{device:02d}_ttyACM0.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(r.to_dict(), indent=2))
    return path


# --------------------------------------------------------------------------- pure helpers

def test_text_colour_follows_cell_luminance():
    import matplotlib

    blues = matplotlib.colormaps["Blues"]
    assert plots.relative_luminance((1, 1, 1)) == pytest.approx(1.0)
    assert plots.relative_luminance((0, 0, 0, 1)) == 0.0
    assert plots.text_color(blues(1.0)) == "white"      # navy: a dark cell, where black text could not be read
    assert plots.text_color(blues(0.0)) == "black"
    assert plots.text_color((1.0, 1.0, 0.0)) == "black"  # yellow is light although "saturated"
    assert plots.text_color((0.0, 0.0, 1.0)) == "white"


def test_legend_label_says_curves_coincide():
    assert plots.legend_label(["fedavg"]) == "fedavg"
    label = plots.legend_label(["fedavg", "fedprox", "fedprox+p"], {"fedprox": "mu=0.01", "fedprox+p": "mu=0.01"})
    assert label.startswith("fedavg = fedprox = fedprox+p")
    assert label.count("mu=0.01") == 1 and "curves coincide at mu=0.01" in label
    assert "curves coincide" in plots.legend_label(["a", "b"])


# --------------------------------------------------------------------------- figures

def test_confusion_counts_readable_and_colorbar_labelled(figures):
    c = np.array([[111, 0, 2], [9, 35, 1], [0, 4, 60]])
    plots.confusion_plot(c, NAMES, "t", io.BytesIO())
    fig = figures[0]
    ax = fig.axes[0]
    colour = {t.get_text(): t.get_color() for t in ax.texts}
    assert colour["111"] == "white" and colour["0"] == "black" and colour["9"] == "black"
    (bar,) = _colorbar_axes(fig)
    assert bar.get_ylabel() == "test windows"
    assert all(float(v).is_integer() for v in bar.get_yticks())


def test_weights_heatmap_integer_ticks_and_labelled_colorbars(figures):
    metrics = [{"phase": "phase2", "round": r, "weights": [0.2, 0.3, 0.5], "cos": [0.1, -0.2, 0.9]}
               for r in (1, 2, 3, 4, 5)]
    assert plots.weights_heatmap(metrics, io.BytesIO()) is not None
    fig = figures[0]
    bars = _colorbar_axes(fig)
    assert len(bars) == 2 and all(b.get_ylabel() for b in bars)
    assert "1/3" in bars[0].get_ylabel()
    for ax in fig.axes[:2]:
        ys = [v for v in ax.get_yticks() if -0.5 <= v <= 2.5]
        assert ys and all(float(v).is_integer() for v in ys)
        shown = [t.get_text() for t in ax.get_xticklabels() if t.get_text()]
        assert shown and set(shown) <= {"1", "2", "3", "4", "5"}
        assert all(float(v).is_integer() for v in ax.get_xticks())
    assert plots.weights_heatmap([{"phase": "phase2", "round": 1}], io.BytesIO()) is None


def test_weights_before_after_one_row_per_run_shared_scale(figures):
    def run(pattern):
        return [{"phase": "phase2", "round": r, "weights": pattern(r), "global_val_acc": 0.5 + 0.01 * r}
                for r in range(1, 7)] + [{"phase": "phase3", "device": 0}]
    zigzag = run(lambda r: [0.45, 0.45, 0.05, 0.05] if r % 2 else [0.05, 0.05, 0.45, 0.45])
    flat = run(lambda r: [0.25, 0.25, 0.25, 0.25])
    assert plots.weights_before_after_plot({"before": zigzag, "after": flat}, io.BytesIO()) is not None
    fig = figures[0]
    images = [ax.images[0] for ax in fig.axes if ax.images]
    assert len(images) == 2                                   # a weights panel per run
    assert {im.get_clim() for im in images} == {(0, 0.45)}     # one colour scale: comparable rows
    curves = [ax for ax in fig.axes if ax.lines]
    assert len(curves) == 2 and all(ax.get_ylim() == (0, 100) for ax in curves)
    assert list(curves[0].lines[0].get_ydata()) == [100 * (0.5 + 0.01 * r) for r in range(1, 7)]
    assert plots.weights_before_after_plot({"x": [{"phase": "phase3"}]}, io.BytesIO()) is None


def test_round_plot_full_range_integer_rounds_and_coinciding_legend(figures):
    same = [(1, 0.81), (2, 0.82), (3, 0.80), (4, 0.79)]
    plots.round_accuracy_plot({"fedavg": same, "fedprox": list(same), "fedmetaalign": [(1, 0.7), (2, 0.9)]},
                              io.BytesIO(), {"fedprox": "mu=0.01"})
    ax = figures[0].axes[0]
    assert ax.get_ylim() == (0, 100)                           # no silent zoom into a 2-point dip
    assert all(float(v).is_integer() for v in ax.get_xticks())
    assert len(ax.lines) == 2
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert any("fedavg = fedprox" in s and "curves coincide at mu=0.01" in s for s in labels)


def test_device_bars_put_float_beside_int8(figures):
    i8 = {"a": {"0": 0.8, "1": 0.9}, "b": {"0": 0.5, "1": 0.6}}
    fl = {"a": {"0": 0.82, "1": 0.91}, "b": {"0": 0.55, "1": 0.65}}
    plots.device_bars_plot(i8, io.BytesIO(), fl)
    ax = figures[0].axes[0]
    heights = [round(p.get_height(), 6) for p in ax.patches]
    assert heights == [82.0, 91.0, 80.0, 90.0, 55.0, 65.0, 50.0, 60.0]   # float then INT8, per variant
    assert ax.get_ylim()[0] == 0
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert any("float" in s for s in legend) and any("INT8" in s for s in legend)


def test_experiment_plots_note_fedprox_mu(tmp_path, figures, monkeypatch):
    runs = {}
    for name, method in (("fedavg", "fedavg"), ("fedprox", "fedprox")):
        run = _fake_run(tmp_path / name)
        cfg = json.loads((run / "config.json").read_text())
        (run / "config.json").write_text(json.dumps({**cfg, "method": method, "mu": 0.05}))
        runs[name] = run
    res = {"variants": {n: {"runs": [{"run_dir": str(r)}], "per_device_int8": {"0": 0.8, "1": 0.7},
                            "per_device_float": {"0": 0.8, "1": 0.7}} for n, r in runs.items()}}
    plots.experiment_plots(res, tmp_path)
    legend = [t.get_text() for t in figures[0].axes[0].get_legend().get_texts()]
    assert legend == ["fedavg = fedprox\n(curves coincide at mu=0.05)"]


# --------------------------------------------------------------------------- report

def test_report_bench_section_from_bench_json(tmp_path):
    from fedtiny.report import render_report

    run = _fake_run(tmp_path)
    _bench_json(run, device=1)
    _bench_json(run, device=0, port="/dev/pts/4", board="emulator", clock="host", model_hash="f" * 64,
                latency_us={"min": 40, "mean": 55, "p50": 52, "p95": 70, "max": 90, "clock": "host"},
                decision_mismatches=[])
    (run / "bench" / "summary.json").write_text("[]")          # several boards: not a result itself
    (run / "bench" / "broken.json").write_text("{not json")
    (run / "bench" / "odd.json").write_text(json.dumps({"device_id": "x", "n": 1, "accuracy": 1, "latency_us": {}}))
    page = render_report(run)
    section = page[page.index('<h2 id="bench">'):page.index("<h2>Phase-2")]
    rows = section.split("<tr>")[2:]
    assert len(rows) == 2
    dev0, dev1 = rows
    # device 1: a board measured with its own timer, one decision differs from the run's INT8
    run_int8_dev1 = json.loads((run / "report.json").read_text())["devices"][1]["int8_acc"]
    for cell in ("nano33ble", "/dev/ttyACM0", "<td>1</td>", "29 / 40", "<td>72.5</td>",
                 f"<td>75.0 / {100 * run_int8_dev1:.1f}</td>", "<td>1</td>", "<td>1311 / 1304 / 1402 / 1499</td>",
                 "<td>device</td>", "2026-11-30 14:05:09+00:00", "mismatch", "<td>yes</td>"):
        assert cell in dev1, cell
    # device 0: the emulator, host clock, a model that is not this run's
    assert "emulator" in dev0 and "<td>host</td>" in dev0 and "<b>NO</b>" in dev0 and ">ok<" in dev0
    assert "host time, not a board" in section and "board&#x27;s own timer" in section
    assert "Skipped broken.json: unreadable" in section and "Skipped odd.json: not a fedtiny" in section
    assert "summary.json" not in section


def test_report_without_bench_results_says_so(tmp_path):
    from fedtiny.report import render_report

    page = render_report(_fake_run(tmp_path))
    assert "no bench results in run/bench/" in page
    assert page.count("data:image/png;base64,") == 4


def test_bench_rows_counts_every_kind_of_mismatch(tmp_path):
    from fedtiny.report import bench_rows

    rep = {"devices": [{"device": 2, "int8_acc": 0.9, "model_sha256": "AB"}]}
    r = {"device_id": 2, "n": 10, "accuracy": 0.8, "latency_us": {"p50": 5, "clock": "device"},
         "model_hash": "ab", "decision_mismatches": [{}], "label_mismatches": [{}, {}],
         "stream": {"n": 3, "accuracy": 1.0, "decision_mismatches": [{}]}}
    (row,) = bench_rows([r], rep)
    assert row["mismatches"] == 4 and row["model_matches"] is True and row["run_int8_all"] == 0.9
    assert row["clock"] == "device" and row["stream_n"] == 3 and row["latency"]["mean"] is None
    (other,) = bench_rows([{**r, "device_id": 7}], rep)
    assert other["model_matches"] is None and other["run_int8_all"] is None


def _cli(*args):
    return subprocess.run([sys.executable, "-c", "from fedtiny.cli import main; main()", *args],
                          capture_output=True, text=True, timeout=120)


def test_report_unwritable_output_one_line_exit_2(tmp_path):
    run = _fake_run(tmp_path)
    blocker = tmp_path / "not_a_dir"
    blocker.write_text("")
    res = _cli("report", str(run), "--out", str(blocker / "r.html"))
    assert res.returncode == 2, res.stderr
    assert res.stderr.startswith("error: cannot write the report to ") and res.stderr.count("\n") == 1
    assert "Traceback" not in res.stderr + res.stdout
    assert sorted(p.name for p in tmp_path.iterdir()) == ["not_a_dir", "run"]


def test_report_failed_rename_leaves_no_temporary_file(tmp_path, monkeypatch):
    import os

    from fedtiny import report
    from fedtiny.errors import UserError

    run = _fake_run(tmp_path)
    out_dir = tmp_path / "out"

    def no_space(*a, **k):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", no_space)
    with pytest.raises(UserError, match="No space left on device"):
        report.write_report(run, out_dir / "r.html")
    assert list(out_dir.iterdir()) == []


def test_report_cli_writes_the_page(tmp_path):
    run = _fake_run(tmp_path)
    _bench_json(run)
    res = _cli("report", str(run))
    assert res.returncode == 0, res.stderr
    page = (run / "report.html").read_text()
    assert '<h2 id="bench">' in page and "nano33ble" in page
    assert not list(run.glob(".*.tmp"))
