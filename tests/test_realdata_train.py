"""Acceptance: the public-form files train with the defaults through the real CLI (no options but
the dataset, the device count, the seed and the run directory), and every device's test split holds
every class of its data."""
from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

import realdata
from fedtiny.cli import main


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("public")
    return {"csv": realdata.write_class_data(d / "classData.csv"),
            "cwru": realdata.write_cwru_tree(d / "CWRU", seconds=2.0)}


def _check_run(out, n_devices, n_classes):
    rep = json.loads((out / "report.json").read_text())
    assert len(rep["devices"]) == n_devices
    for i in range(n_devices):
        ddir = out / "devices" / f"dev{i:02d}"
        info = json.loads((ddir / "device.json").read_text())
        own = {k for k, c in enumerate(info["class_counts"]) if c > 0}
        test = set(np.unique(np.load(ddir / "test_split.npz")["y"]).tolist())
        assert own == test, (i, own, test)            # the test split holds every class of the device
        assert len(own) >= 2 and info["n_test"] > 0
    assert 0.0 <= rep["summary"]["mean_int8_acc"] <= 1.0
    return rep


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_class_data_csv_trains_3_devices_with_defaults(files, tmp_path, seed):
    out = tmp_path / f"csv-s{seed}"
    res = CliRunner().invoke(main, ["train", "--dataset", str(files["csv"]), "--devices", "3",
                                    "--seed", str(seed), "--out", str(out)])
    assert res.exit_code == 0, res.output
    rep = _check_run(out, 3, 6)
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["window_ms"] == 10.0 and cfg["block_ms"] == 12.5 and cfg["hop_ms"] is None
    assert rep["class_names"] == ["no_fault", "LG", "LL", "LLG", "LLL", "LLLG"]


@pytest.mark.parametrize("n_devices", [3, 10])
def test_cwru_tree_trains_with_defaults(files, tmp_path, n_devices):
    out = tmp_path / f"cwru-{n_devices}"
    res = CliRunner().invoke(main, ["train", "--dataset", str(files["cwru"]), "--devices", str(n_devices),
                                    "--seed", "0", "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert "skipped 2 file(s)" in res.output and "fan-end" in res.output
    _check_run(out, n_devices, 4)
