"""``--engine flower-sim``: the same run through Flower's simulation engine (Ray) gives the
per-device in-process engine's (``--engine in-process-loop``: each Flower site runs that engine)
splits, weights, accuracies and thresholds, its messages carry weights and metrics only, and every
port Ray opens meanwhile listens on 127.0.0.1 only."""
from __future__ import annotations

import json
import os
import threading

import numpy as np
import pytest

from conftest import report_without_timings as _report, small_config
from flowerfixture import is_loopback_address, listening_sockets, process_tree

pytest.importorskip("flwr")
pytest.importorskip("ray")



def test_simulation_equals_inprocess_and_sends_no_windows(small_run_loop, tmp_path):
    small_run = small_run_loop
    from fedtiny.trainer.flower.messages import REPLY_KEYS
    from fedtiny.trainer.flower.simulation import FlowerSim, train_sim
    from fedtiny.trainer.rundir import load_weights

    factory = FlowerSim(timeout=600, wait=300)
    out = tmp_path / "sim"
    sockets, done = set(), threading.Event()

    def sample():                                   # what Ray listens on while the run goes on
        while not done.is_set():
            sockets.update(listening_sockets(process_tree(os.getpid())))
            done.wait(0.5)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        train_sim(small_config(), out, factory=factory)
    finally:
        done.set()
        sampler.join(10)
    ray_ports = [s for s in sockets if s[2] != os.getpid()]
    assert len(ray_ports) >= 3, sockets              # GCS, raylet, workers: seen, so the check is real
    assert all(is_loopback_address(a) for a, _, _ in sockets), sorted(sockets)
    a, b = _report(small_run), _report(out)
    for da, db in zip(a["devices"], b["devices"]):
        assert da["threshold"] == db["threshold"]
        assert da["float_acc"] == db["float_acc"] and da["int8_acc"] == db["int8_acc"]
    assert a == b                                   # here even the model bytes agree
    ma = [json.loads(x) for x in (small_run / "metrics.jsonl").read_text().splitlines()]
    mb = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [m["phase"] for m in ma] == [m["phase"] for m in mb]
    for x, y in zip(ma, mb):
        if x["phase"] == "phase2":
            assert x["local_val_acc"] == y["local_val_acc"] and x["global_val_acc"] == y["global_val_acc"]
            assert np.allclose(x["weights"], y["weights"], atol=1e-9)
    wa = load_weights(small_run / "state" / json.loads((small_run / "state/progress.json").read_text())["weights"])
    wb = load_weights(out / "state" / json.loads((out / "state/progress.json").read_text())["weights"])
    assert all(np.allclose(x, y, atol=1e-6) for x, y in zip(wa, wb))
    for d in range(3):                              # the same test split (same keys, same cuts)
        za = np.load(small_run / "devices" / f"dev{d:02d}" / "test_split.npz")
        zb = np.load(out / "devices" / f"dev{d:02d}" / "test_split.npz")
        assert np.array_equal(za["x"], zb["x"]) and np.array_equal(za["y"], zb["y"])

    # what came back over Flower: the model's weights, metrics and the Phase-3 artifacts, nothing else
    shapes = [w.shape for w in wa]
    kinds = set()
    backend = factory.backend
    assert len(backend.received) >= 3 * (1 + 2 * 2 + 1)      # Phase 1, 2 rounds (fit + evaluate), Phase 3
    for msg in backend.received:
        assert not msg.has_error()
        c = msg.content
        assert set(c.keys()) <= {"arrays", "reply"}
        assert set(c["reply"].keys()) <= REPLY_KEYS
        if "arrays" in c:
            assert [a.shape for a in c["arrays"].to_numpy_ndarrays()] == shapes
        if "model_int8" in c["reply"]:
            kinds.add("finalize")
            dev = int(c["reply"]["device"])
            assert c["reply"]["model_int8"] == (out / "devices" / f"dev{dev:02d}" / "model_int8.tflite").read_bytes()
    assert kinds == {"finalize"}


def test_flower_engines_refuse_the_non_federated_references(tmp_path):
    import subprocess
    import sys

    code = "from fedtiny.cli import run; run()"
    p = subprocess.run([sys.executable, "-c", code, "train", "--engine", "flower-sim", "--method", "local",
                        "--devices", "2", "--out", str(tmp_path / "r")], capture_output=True, text=True, timeout=300)
    assert p.returncode == 2, p.stderr
    from fedtiny.trainer.config import FEDERATED

    assert p.stderr.strip().splitlines() == [
        f"error: --engine flower-sim runs the federated methods ({', '.join(FEDERATED)}); local pools or "
        "never shares data: use --engine inprocess"]
    assert not (tmp_path / "r").exists()
