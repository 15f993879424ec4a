"""The fleet-folder commands end to end, through the command line: `train --fleet` (report by folder
name, `build --device NAME`), `compare --fleet`, `ablate --fleet` and `train --engine flower-sim
--fleet`. One tiny in-process-loop run is trained once; compare and ablate reuse it (their
Fed-Meta-Align runs resolve exactly the config `train --fleet` wrote) and train one more variant each
for real; the Flower simulation equals it."""
from __future__ import annotations

import json
import shutil

import pytest
from click.testing import CliRunner

from conftest import report_without_timings

# the command line has no epoch options: the resolved config is shrunk after --fleet resolved it
TINY = dict(phase0_epochs=2, phase1_epochs=1, local_epochs=1, phase3_epochs=2, reference_epochs=2, rounds=1)


def _tiny(monkeypatch):
    from fedtiny import experiments_cli, options, train_cli

    real = options.config_fields

    def fields(kw, server=False):
        return {**real(kw, server), **TINY}

    monkeypatch.setattr(train_cli, "config_fields", fields)
    monkeypatch.setattr(experiments_cli, "config_fields", fields)


def _cli(*args):
    from fedtiny.cli import main

    res = CliRunner().invoke(main, [str(a) for a in args])
    return res


@pytest.fixture(scope="module")
def fleet(tmp_path_factory):
    """`fedtiny data export electrical --devices 2` as FLEET + POOL (tiny)."""
    root = tmp_path_factory.mktemp("fleet-runs")
    res = _cli("data", "export", "electrical", "--devices", 2, "--seed", 0, "--samples-per-device", 80,
               "--public-samples", 120, "--out", root / "F", "--public-out", root / "P")
    assert res.exit_code == 0, res.output
    return root / "F", root / "P"


@pytest.fixture(scope="module")
def loop_run(fleet, tmp_path_factory):
    """`fedtiny train --fleet F --public P --engine in-process-loop` (tiny epochs)."""
    mp = pytest.MonkeyPatch()
    _tiny(mp)
    try:
        f, p = fleet
        out = tmp_path_factory.mktemp("loop") / "R"
        res = _cli("train", "--fleet", f, "--public", p, "--engine", "in-process-loop", "--out", out)
        assert res.exit_code == 0, res.output
    finally:
        mp.undo()
    return out


def test_train_fleet_reports_devices_by_folder_name_and_builds_by_name(loop_run):
    rep = json.loads((loop_run / "report.json").read_text())
    assert [d["name"] for d in rep["devices"]] == ["dev00", "dev01"]
    assert rep["dataset"] == "fleet of 2 devices (dev00, dev01); public pool P"
    cfg = json.loads((loop_run / "config.json").read_text())
    assert cfg["device_names"] == ["dev00", "dev01"] and cfg["channels"] == ["Ia", "Ib", "Ic", "Va", "Vb", "Vc"]
    assert cfg["rate_hz"] == 2000.0 and len(cfg["channel_units"]) == 6 and cfg["class_names"][0] == "no_fault"
    res = _cli("build", "--device", "dev01", "--run", loop_run, "--board", "qemu-m4", "--no-compile")
    assert res.exit_code == 0, res.output
    assert "  device       dev01 (device 1 of the run)" in res.output.splitlines()
    assert (loop_run / "firmware" / "dev01-qemu-m4").is_dir()


def _seed_with(loop_run, out, name):
    """OUT/runs/<name>-s0 = a copy of the train --fleet run: reused only if the experiment's variant
    resolves the same config."""
    dest = out / "runs" / f"{name}-s0"
    shutil.copytree(loop_run, dest, ignore=shutil.ignore_patterns("firmware"))
    return dest, (dest / "report.json").stat().st_mtime_ns


def test_compare_fleet(fleet, loop_run, tmp_path, monkeypatch):
    _tiny(monkeypatch)
    f, p = fleet
    out = tmp_path / "C"
    reused, stamp = _seed_with(loop_run, out, "fedmetaalign")
    res = _cli("compare", "--fleet", f, "--public", p, "--variants", "fedmetaalign,local", "--seeds", "0", "--out", out)
    assert res.exit_code == 0, res.output
    assert (reused / "report.json").stat().st_mtime_ns == stamp           # the same run: not trained again
    data = json.loads((out / "results.json").read_text())
    assert set(data["variants"]) == {"fedmetaalign", "local"}
    local = json.loads((out / "runs" / "local-s0" / "report.json").read_text())
    assert [d["name"] for d in local["devices"]] == ["dev00", "dev01"] and local["method"] == "local"
    assert f"--fleet {f}" in data["meta"]["command"] and f"--public {p}" in data["meta"]["command"]
    assert "fleet of 2 devices (dev00, dev01); public pool P" in (out / "table.md").read_text()


def test_ablate_fleet(fleet, loop_run, tmp_path, monkeypatch):
    from fedtiny import experiments

    _tiny(monkeypatch)
    base = next(iter(experiments.ABLATE_VARIANTS))
    monkeypatch.setattr(experiments, "ABLATE_VARIANTS", {base: {}, "no phase1": {"skip_phase1": True}})
    f, p = fleet
    out = tmp_path / "A"
    reused, stamp = _seed_with(loop_run, out, experiments.slug(base))
    res = _cli("ablate", "--fleet", f, "--public", p, "--seeds", "0", "--out", out)
    assert res.exit_code == 0, res.output
    assert (reused / "report.json").stat().st_mtime_ns == stamp
    cfg = json.loads((out / "runs" / "no_phase1-s0" / "config.json").read_text())
    assert cfg["skip_phase1"] is True and cfg["device_names"] == ["dev00", "dev01"] and cfg["dataset"] == str(f)
    lines = [json.loads(x) for x in (out / "runs" / "no_phase1-s0" / "metrics.jsonl").read_text().splitlines()]
    assert not any(x.get("phase") == "phase1" for x in lines) and any(x.get("phase") == "phase2" for x in lines)


def test_flower_sim_fleet_equals_the_in_process_loop_run(fleet, loop_run, tmp_path, monkeypatch):
    """`train --engine flower-sim --fleet` (Flower's simulation engine on Ray; each site runs the
    per-device engine) writes the in-process-loop run byte for byte; its messages carry the model's
    weights, metrics and the Phase-3 artifacts only (never a window); every port Ray opens
    meanwhile listens on 127.0.0.1 only."""
    import os
    import threading

    import numpy as np

    pytest.importorskip("flwr")
    pytest.importorskip("ray")
    from flowerfixture import is_loopback_address, listening_sockets, process_tree

    from fedtiny.trainer.flower import simulation
    from fedtiny.trainer.flower.messages import REPLY_KEYS
    from fedtiny.trainer.rundir import load_weights

    made = []

    class Recorded(simulation.FlowerSim):          # the command's engine, kept to read its messages
        def __init__(self, *a, **k):
            super().__init__(*a, **k)
            made.append(self)

    monkeypatch.setattr(simulation, "FlowerSim", Recorded)
    _tiny(monkeypatch)
    f, p = fleet
    out = tmp_path / "S"
    sockets, done = set(), threading.Event()

    def sample():                                   # what Ray listens on while the run goes on
        while not done.is_set():
            sockets.update(listening_sockets(process_tree(os.getpid())))
            done.wait(0.5)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        res = _cli("train", "--engine", "flower-sim", "--fleet", f, "--public", p, "--out", out)
    finally:
        done.set()
        sampler.join(10)
    assert res.exit_code == 0, res.output
    ray_ports = [x for x in sockets if x[2] != os.getpid()]
    assert len(ray_ports) >= 3, sockets              # GCS, raylet, workers: seen, so the check is real
    assert all(is_loopback_address(a) for a, _, _ in sockets), sorted(sockets)
    assert report_without_timings(out) == report_without_timings(loop_run)
    assert (out / "metrics.jsonl").read_text() == (loop_run / "metrics.jsonl").read_text()
    names = ("dev00", "dev01")
    for d in names:
        assert (out / "devices" / d / "model_int8.tflite").read_bytes() == \
            (loop_run / "devices" / d / "model_int8.tflite").read_bytes()
        za, zb = np.load(loop_run / "devices" / d / "test_split.npz"), np.load(out / "devices" / d / "test_split.npz")
        assert np.array_equal(za["x"], zb["x"]) and np.array_equal(za["y"], zb["y"])
    wa = load_weights(loop_run / "state" / json.loads((loop_run / "state/progress.json").read_text())["weights"])
    wb = load_weights(out / "state" / json.loads((out / "state/progress.json").read_text())["weights"])
    assert all(np.allclose(x, y, atol=1e-6) for x, y in zip(wa, wb))

    # what came back over Flower: the model's weights, metrics and the Phase-3 artifacts, nothing else
    shapes, finals = [w.shape for w in wa], set()
    (engine,) = made
    received = engine.backend.received
    assert len(received) >= len(names) * (1 + 2 * TINY["rounds"] + 1)    # Phase 1, rounds (fit + evaluate), Phase 3
    for msg in received:
        assert not msg.has_error()
        c = msg.content
        assert set(c.keys()) <= {"arrays", "reply"}
        assert set(c["reply"].keys()) <= REPLY_KEYS
        if "arrays" in c:
            assert [a.shape for a in c["arrays"].to_numpy_ndarrays()] == shapes
        if "model_int8" in c["reply"]:
            dev = names[int(c["reply"]["device"])]
            finals.add(dev)
            assert c["reply"]["model_int8"] == (out / "devices" / dev / "model_int8.tflite").read_bytes()
    assert finals == set(names)


def test_the_servers_report_names_the_run_as_train_fleet_does(fleet, loop_run):
    """`fedtiny server --public P --devices 2` never sees the fleet folder: its config (resolved as the
    command resolves it) still gives the report's dataset of `train --fleet F --public P`."""
    from fedtiny.options import config_fields
    from fedtiny.trainer.config import TrainConfig
    from fedtiny.trainer.rundir import dataset_label

    _, p = fleet
    server = TrainConfig(**config_fields({"public": str(p), "devices": 2}, server=True))
    assert server.dataset == "electrical"                          # no fleet path on the server
    assert dataset_label(server) == json.loads((loop_run / "report.json").read_text())["dataset"]
    many = TrainConfig(**config_fields({"public": str(p), "devices": 12}, server=True))
    assert dataset_label(many) == "fleet of 12 devices (dev00, dev01, dev02, ..., dev11); public pool P"


def test_a_run_written_before_channel_units_still_matches_its_config():
    """config.json of an older version lacks channel_units: it still equals the same run's config now
    (resume and experiment reuse), since the default () is what older runs did."""
    from conftest import small_config

    from fedtiny.trainer.pipeline import stored_config

    cfg = small_config()
    old = cfg.to_dict()
    del old["channel_units"]
    assert old != cfg.to_dict() and stored_config(old) == cfg.to_dict()
    assert stored_config({"nonsense": 1}) == {"nonsense": 1}
