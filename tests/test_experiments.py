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
        for k in ("float_mean", "float_std", "int8_mean", "int8_std", "far_mean", "far_std", "dr_mean", "dr_std"):
            if v[k] is not None:
                json_pcts.add(f"{100 * v[k]:.2f}")
        json_pcts |= {f"{100 * x:.2f}" for x in v["per_device_int8"].values()}
        for r in v["runs"]:
            rep = json.loads((Path(r["run_dir"]) / "report.json").read_text())
            assert rep["summary"]["mean_int8_acc"] == r["mean_int8_acc"]
            assert rep["summary"]["fleet_int8_far"] == r["fleet_int8_far"]
            assert rep["seed"] == r["seed"]
    numbers = re.findall(r"\d+\.\d\d", "\n".join(summary + dev_rows))
    assert numbers and all(n in json_pcts for n in numbers)
    # false-alarm and detection columns on every row; the classical references among the rows,
    # their thresholds the default, the personalized networks' tuned locally or from the fleet
    assert all(len(r.split("|")) == 8 for r in summary)
    assert {"reference-local", "reference-central"} <= set(data["variants"])
    assert "| reference-local | 0 / 0 / 4 | - |" in table
    fma = data["variants"]["fedmetaalign"]["runs"]
    assert sum(r["threshold_origins"]["default"] for r in fma) == 0

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
    assert "false alarms" in text and "threshold from" in text and "Fleet-wide" in text
    bad = CliRunner().invoke(main, ["report", str(tmp_path)])
    assert bad.exit_code == 2 and "not a finished run" in bad.output


def test_compare_into_an_out_of_other_options_is_refused_and_keeps_results(small_run, tmp_path):
    """A finished compare (here: the small run as its one fedmetaalign run, tabulated as the CLI
    does) rerun into the same --out with other options: one error line naming the differing
    options, exit 2, and table.md / results.json / plots untouched. results.json records the
    effective command with its --variants."""
    import shutil

    from fedtiny.cli import main
    from fedtiny.experiments import COMPARE_VARIANTS, experiment_options, run_variants, write_outputs

    out = tmp_path / "cmp"
    shutil.copytree(small_run, out / "runs" / "fedmetaalign-s0")
    base = small_config()
    variants = {"fedmetaalign": COMPARE_VARIANTS["fedmetaalign"]}
    res = run_variants(base, variants, [0], out)                    # reuses the run: nothing trained
    assert not res["failed"]
    write_outputs(res, out, "t", {"options": experiment_options("compare", base, [0], variants),
                                  "config": base.to_dict()})
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    assert "table.md" in before and "results.json" in before
    args = ["compare", "--variants", "fedmetaalign", "--seeds", "0", "--devices", "3", "--rounds", "3",
            "--out", str(out)]
    res = CliRunner().invoke(main, args)
    assert res.exit_code == 2 and "Traceback" not in res.output, res.output
    err = [x for x in res.output.splitlines() if x.startswith("error:")]
    assert len(err) == 1 and "rounds" in err[0] and "public_samples" in err[0] and str(out) in err[0]
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()} == before


def test_compare_records_its_full_command(small_run, tmp_path, monkeypatch):
    """results.json meta: the command as run, --variants included, and every effective option."""
    import shutil

    from fedtiny import experiments_cli
    from fedtiny.trainer.config import TrainConfig

    out = tmp_path / "cmp"
    shutil.copytree(small_run, out / "runs" / "fedmetaalign-s0")
    monkeypatch.setattr(experiments_cli, "config_fields",
                        lambda options: {k: v for k, v in small_config().to_dict().items()
                                         if k not in ("method", "seed", "personalize")} | {"splits": (0.2, 0.5, 0.3)})
    res = CliRunner().invoke(experiments_cli.compare, ["--variants", "fedmetaalign", "--seeds", "0",
                                                       "--out", str(out)])
    assert res.exit_code == 0, res.output
    meta = json.loads((out / "results.json").read_text())["meta"]
    assert "--variants fedmetaalign" in meta["command"] and "--seeds 0" in meta["command"]
    assert meta["options"]["variants"] == ["fedmetaalign"] and meta["options"]["seeds"] == [0]
    assert TrainConfig.from_dict(meta["options"]["config"]).rounds == small_config().rounds
