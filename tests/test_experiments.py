"""compare on a tiny configuration: table shape, numbers traceable to run directories, plots."""
from __future__ import annotations

import json
import re
from pathlib import Path

from click.testing import CliRunner

from conftest import small_config


def test_compare_tiny(tmp_path):
    from fedtiny.experiments import COMPARE_VARIANTS, run_variants, write_outputs

    base = small_config(dataset="mechanical", devices=2, samples_per_device=80, public_samples=120, rounds=1,
                        phase0_epochs=2, phase3_epochs=2, reference_epochs=2)
    res = run_variants(base, COMPARE_VARIANTS, [0, 1], tmp_path)
    paths = write_outputs(res, tmp_path, "tiny", {"command": "test"})
    table = (tmp_path / "table.md").read_text()
    data = json.loads((tmp_path / "results.json").read_text())

    # shape: one summary row per variant, one per-device row per device
    acc_part, counts_part = table.split("Test windows per class")
    rows = [ln for ln in acc_part.splitlines() if ln.startswith("| ") and not ln.startswith("| ---")]
    summary = [r for r in rows if "±" in r and not r.startswith("| variant")]
    assert [r.split("|")[1].strip() for r in summary] == list(COMPARE_VARIANTS)
    dev_rows = [r for r in rows if re.match(r"\| \d+ \|", r)]
    assert len(dev_rows) == 2 and all(len(r.split("|")) == len(COMPARE_VARIANTS) + 3 for r in dev_rows)
    # per device, its test windows per class for seeds 0/1, as the run reports hold them
    count_rows = [r for r in counts_part.splitlines() if re.match(r"\| \d+ \|", r)]
    assert len(count_rows) == 2
    for r, dev in zip(count_rows, (0, 1)):
        cells = [c.strip() for c in r.split("|")[2:-1]]
        reps = [json.loads((Path(run["run_dir"]) / "report.json").read_text())
                for run in data["variants"]["fedmetaalign"]["runs"]]
        assert cells == ["/".join(str(rep["devices"][dev]["test_class_counts"][k]) for rep in reps)
                         for k in range(len(reps[0]["class_names"]))]

    # every number in the table is found in the JSON, and the JSON's numbers trace to run dirs
    json_pcts = set()
    for v in data["variants"].values():
        for k in ("float_mean", "float_std", "int8_mean", "int8_std"):
            json_pcts.add(f"{100 * v[k]:.2f}")
        json_pcts |= {f"{100 * x:.2f}" for x in v["per_device_int8"].values()}
        for r in v["runs"]:
            rep = json.loads((Path(r["run_dir"]) / "report.json").read_text())
            assert rep["summary"]["mean_int8_acc"] == r["mean_int8_acc"]
            assert rep["seed"] == r["seed"]
    numbers = re.findall(r"\d+\.\d\d", "\n".join(summary + dev_rows))
    assert numbers and all(n in json_pcts for n in numbers)

    for key, p in paths.items():
        if key.endswith("png") or key.startswith("confusion"):
            assert Path(p).stat().st_size > 2000, key
    assert (tmp_path / "fma_weights_cos.png").exists()

    # a second call reuses the finished runs instead of training again
    before = {p: p.stat().st_mtime for p in tmp_path.glob("runs/*/report.json")}
    run_variants(base, COMPARE_VARIANTS, [0, 1], tmp_path)
    assert {p: p.stat().st_mtime for p in tmp_path.glob("runs/*/report.json")} == before


def test_report_html(small_run, tmp_path):
    from fedtiny.cli import main

    out = tmp_path / "r.html"
    res = CliRunner().invoke(main, ["report", str(small_run), "--out", str(out)])
    assert res.exit_code == 0, res.output
    text = out.read_text()
    assert text.count("data:image/png;base64,") == 4
    assert "fedmetaalign" in text
    bad = CliRunner().invoke(main, ["report", str(tmp_path)])
    assert bad.exit_code == 2 and "not a finished run" in bad.output
