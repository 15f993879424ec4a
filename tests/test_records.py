"""Plots, tables and records say what the run did: the cosine's reference, the faulty devices,
the project's arena terms, and a demo table that fits an 80-column terminal."""
from __future__ import annotations

from types import SimpleNamespace

import pytest


@pytest.mark.parametrize("ref, words", [("mean", "mean update"), ("normalized", "unit-length"),
                                        ("server", "previous server step")])
def test_cosine_heatmap_is_titled_by_the_align_ref(monkeypatch, ref, words):
    import io

    from fedtiny import plots

    figs = []
    monkeypatch.setattr(plots, "_save", lambda fig, path: figs.append(fig) or path)
    metrics = [{"phase": "phase2", "round": r, "weights": [0.5, 0.5], "cos": [0.9, 0.1]} for r in (1, 2)]
    plots.weights_heatmap(metrics, io.BytesIO(), ref)
    title = figs[0].axes[1].get_title()
    assert words in title and f"--align-ref {ref}" in title
    if ref != "mean":
        assert "mean update" not in title


def test_report_uses_the_projects_arena_term_and_the_runs_align_ref(small_run, monkeypatch):
    from fedtiny import plots
    from fedtiny.report import render_report

    titles = []
    real = plots.weights_heatmap
    monkeypatch.setattr(plots, "weights_heatmap",
                        lambda m, p, ref="mean": titles.append(ref) or real(m, p, ref))
    page = render_report(small_run)
    assert "arena B" not in page and "arena used B (host)" in page and "arena used (host)" in page
    assert titles == ["normalized"]                            # the small run's --align-ref (default)


FAULTS = {"kind": "noise", "devices": [1, 4], "honest_mean_float_acc": 0.9, "honest_mean_int8_acc": 0.9,
          "faulty_weight_share_per_round": [0.1, 0.2]}


def test_faulty_device_tables_name_the_fault_and_the_devices(capsys):
    from fedtiny.experiments import markdown_table
    from fedtiny.train_cli import print_summary

    run = {"seed": 0, "run_dir": "r", "mean_float_acc": 0.9, "mean_int8_acc": 0.9, "class_names": ["n", "f"],
           "faults": FAULTS, "warnings": [], "devices": []}
    v = {"runs": [run], "float_mean": 0.9, "float_std": None, "int8_mean": 0.9, "int8_std": None,
         "honest_int8_mean": 0.9, "honest_int8_std": None, "faulty_weight_share": 0.15,
         "per_device_float": {}, "per_device_int8": {}}
    table = markdown_table({"variants": {"fedmetaalign": v, "fedavg": v}, "failed": []}, "t")
    assert "- seed 0: faulty devices (--fault noise): 1, 4; the others are honest" in table
    dev = {"device": 0, "n_test": 5, "float_acc": 1.0, "int8_acc": 1.0, "threshold": 0.5, "model_bytes": 1,
           "arena_bytes": 2}
    print_summary({"method": "fedmetaalign", "dataset": "electrical", "seed": 0, "devices": [dev],
                   "summary": {"mean_float_acc": 1.0, "mean_int8_acc": 1.0}, "faults": FAULTS}, "out")
    assert "faulty devices (--fault noise): 1, 4" in capsys.readouterr().out


def test_demo_table_fits_80_columns():
    """Realistic widths (six-digit margins): every number whole, no line over 80 columns."""
    import io

    from rich.console import Console

    from fedtiny.demo import DemoResult, summary_table

    devs, builds = [], []
    for i in range(3):
        devs.append({"device": i, "n_test": 1234, "float_acc": 0.987, "int8_acc": 0.976, "threshold": 0.456,
                     "model_bytes": 23456, "arena_bytes": 4321})
        builds.append(SimpleNamespace(device=i, arena_bytes=5120, flash_budget=983040, flash_used=338000,
                                      ram_budget=262144, ram_used=31000))
    report = {"method": "fedmetaalign", "dataset": "electrical", "seed": 0, "devices": devs,
              "summary": {"mean_float_acc": 0.987, "mean_int8_acc": 0.976}}
    buf = io.StringIO()
    Console(width=80, file=buf).print(summary_table(DemoResult(None, report, builds, None, [])))
    text = buf.getvalue()
    assert max(len(line) for line in text.splitlines()) <= 80
    assert "…" not in text and "..." not in text
    for number in ("645040", "231144", "23456", "4321", "5120", "1234", "98.7%", "97.6%", "0.456"):
        assert number in text, number
