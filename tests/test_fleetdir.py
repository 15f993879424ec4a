"""The fleet folder: export -> read gives the same windows, and a run on the exported folder equals
the run on the dataset it came from."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from conftest import SMALL, report_without_timings


def _order(groups):
    """Rank of each group by first appearance: what the splitter's stratified cut depends on."""
    _, first = np.unique(groups, return_index=True)
    return np.argsort(np.argsort(first))


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """The small built-in electrical fleet of conftest.SMALL exported as FLEET + POOL folders."""
    from fedtiny.trainer.data import load_fleet
    from fedtiny.trainer.data.fleetdir import export

    root = tmp_path_factory.mktemp("fleet")
    src = load_fleet("electrical", n_devices=SMALL["devices"], alpha=0.5, seed=0,
                     samples_per_device=SMALL["samples_per_device"], public_samples=SMALL["public_samples"])
    export(src, root / "F", root / "P", source="electrical")
    return src, root / "F", root / "P"


def test_export_reads_back_the_same_windows_labels_and_groups(exported):
    from fedtiny.trainer.config import TrainConfig
    from fedtiny.trainer.data.fleetdir import load_fleet_dir, run_fields

    src, fdir, pdir = exported
    got = load_fleet_dir(TrainConfig(**run_fields(str(pdir), fdir), public=str(pdir)))
    assert got.info["device_names"] == ["dev00", "dev01", "dev02"]
    assert got.class_names == src.class_names and got.channel_names == src.channel_names
    assert np.array_equal(got.channel_scale, src.channel_scale)
    for a, b in zip([src.public] + src.devices, [got.public] + got.devices):
        assert np.array_equal(a.x, b.x) and np.array_equal(a.y, b.y)
        assert np.array_equal(_order(a.groups), _order(b.groups))


def test_train_on_the_exported_fleet_equals_train_on_the_dataset(exported, small_run, tmp_path):
    from fedtiny.trainer.data.fleetdir import run_fields
    from fedtiny.trainer.pipeline import train

    _, fdir, pdir = exported
    from fedtiny.trainer.config import TrainConfig

    small = {k: v for k, v in SMALL.items() if k != "samples_per_device"}     # the folder holds the windows
    cfg = TrainConfig(**{**small, **run_fields(str(pdir), fdir)}, public=str(pdir))
    out = tmp_path / "fleet-run"
    train(cfg, out)
    a, b = report_without_timings(small_run), report_without_timings(out)
    assert b.pop("dataset") == "fleet of 3 devices (dev00, dev01, dev02); public pool P"
    a.pop("dataset")
    assert a == b
    for dev in ("dev00", "dev01", "dev02"):
        da = json.loads((small_run / "devices" / dev / "device.json").read_text())
        db = json.loads((out / "devices" / dev / "device.json").read_text())
        da.pop("condition")                      # the generator's knobs stay with the generator
        assert db.pop("condition") == {"name": dev}
        assert da == db


def test_demo_trains_the_exported_fleet_folder(exported, tmp_path):
    """``fedtiny demo``'s data path: its built-in fleet exported by ``data export``'s code is the same
    folder, byte for byte, as the export above, and its config is the one whose run equals the
    dataset's run (the test above) but for the data's paths; a second call reuses the export."""
    from conftest import small_config

    from fedtiny.demo import fleet_config
    from fedtiny.trainer.config import TrainConfig
    from fedtiny.trainer.data.fleetdir import run_fields

    _, fdir, pdir = exported
    cfg = fleet_config(small_config(), tmp_path / "data")
    small = {k: v for k, v in SMALL.items() if k != "samples_per_device"}
    ref = TrainConfig(**{**small, **run_fields(str(pdir), fdir)}, public=str(pdir))
    a, b = cfg.to_dict(), ref.to_dict()
    got_f, got_p = a.pop("dataset"), a.pop("public")
    b.pop("dataset"), b.pop("public")
    assert a == b
    for mine, theirs in ((got_f, fdir), (got_p, pdir)):
        files = sorted(p.relative_to(theirs) for p in theirs.rglob("*") if p.is_file())
        assert files == sorted(p.relative_to(mine) for p in Path(mine).rglob("*") if p.is_file())
        assert all((Path(mine) / f).read_bytes() == (theirs / f).read_bytes() for f in files)
    stamp = (Path(got_f) / "fleet.toml").stat().st_mtime_ns
    assert fleet_config(small_config(), tmp_path / "data") == cfg
    assert (Path(got_f) / "fleet.toml").stat().st_mtime_ns == stamp


@pytest.fixture(scope="module")
def named_run(exported, tmp_path_factory):
    """A small run on the exported fleet with its device folders renamed (a copy of it)."""
    import shutil

    from fedtiny.trainer.config import TrainConfig
    from fedtiny.trainer.data.fleetdir import run_fields
    from fedtiny.trainer.pipeline import train

    _, fdir, pdir = exported
    root = tmp_path_factory.mktemp("named")
    shutil.copytree(fdir, root / "F")
    for old, new in (("dev00", "pump-07"), ("dev01", "pump-08"), ("dev02", "Pump-10")):
        (root / "F" / old).rename(root / "F" / new)
    small = {k: v for k, v in SMALL.items() if k not in ("samples_per_device", "rounds")}
    cfg = TrainConfig(**{**small, **run_fields(str(pdir), root / "F")}, public=str(pdir), rounds=1, method="fedavg")
    train(cfg, root / "R")
    return root / "R"


def test_devices_are_kept_by_folder_name(named_run):
    from click.testing import CliRunner

    from fedtiny.cli import main

    rep = json.loads((named_run / "report.json").read_text())
    assert [d["name"] for d in rep["devices"]] == ["Pump-10", "pump-07", "pump-08"]     # name order
    assert sorted(p.name for p in (named_run / "devices").iterdir()) == ["Pump-10", "pump-07", "pump-08"]
    assert json.loads((named_run / "devices" / "pump-08" / "device.json").read_text())["name"] == "pump-08"
    res = CliRunner().invoke(main, ["build", "--device", "pump-08", "--run", str(named_run), "--board", "qemu-m4",
                                    "--no-compile"])
    assert res.exit_code == 0, res.output
    assert (named_run / "firmware" / "pump-08-qemu-m4").is_dir()
    res = CliRunner().invoke(main, ["build", "--device", "pump-99", "--run", str(named_run), "--no-compile"])
    assert res.exit_code == 2 and "no device named 'pump-99'" in res.output
