"""``fedtiny demo``'s pipeline on a small fleet: train, build every device, emulate and bench one."""
from __future__ import annotations

import json

import numpy as np
from click.testing import CliRunner

from conftest import small_config


def test_demo_pipeline_end_to_end(small_run, tmp_path):
    import shutil

    from fedtiny.demo import bench_lines, run_demo, summary_table

    out = tmp_path / "demo"
    shutil.copytree(small_run, out)          # same config: load_or_train reuses it, no retraining
    res = run_demo(small_config(), out, "nano33ble", 1, stream=4)
    assert res.report == json.loads((out / "report.json").read_text())
    assert [b.device for b in res.builds] == [0, 1, 2]
    for b in res.builds:
        assert (b.project_dir / "src" / "main.cpp").is_file()
        assert b.flash_used <= b.flash_budget and b.ram_used <= b.ram_budget
    b = res.builds[1]
    with np.load(out / "devices" / "dev01" / "test_split.npz") as z:
        y, pred = z["y"][:b.test_samples], z["pred_int8"][:b.test_samples]
    bench = res.bench
    assert bench.clock == "host" and bench.n == b.test_samples
    assert bench.ok and not bench.decision_mismatches
    assert bench.accuracy == np.mean(pred == y)          # sample for sample, the run's INT8 result
    info = json.loads((out / "devices" / "dev01" / "device.json").read_text())
    assert b.test_samples == info["n_test"]              # the whole test split fits the board
    assert bench.accuracy == info["int8_acc"]
    assert bench.stream is not None and bench.stream["n"] == 4
    assert all(p.stat().st_size > 0 for p in res.bench_files)
    text = "\n".join(bench_lines(res))
    assert "clock=host" in text
    assert summary_table(res).row_count == 3 + 1


def test_demo_rejects_bad_options_before_training():
    from fedtiny.cli import main

    for args, needle in ((["--devices", "2", "--bench-device", "5"], "bench-device"),
                         (["--board", "no_such_board"], "unknown board")):
        res = CliRunner().invoke(main, ["demo", *args])
        assert res.exit_code == 2, res.output
        assert res.output.strip().startswith("error:") and needle in res.output
        assert "Traceback" not in res.output
