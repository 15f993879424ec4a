"""Attacks on a federation, reproduced on 127.0.0.1 or against the pure functions they target, and
shown refused or contained: a foreign run, a slot hijack, scaled-weight poisoning, a fake Phase-3
artifact, a ``127.`` host name (Ray's sockets: ``test_fleet_runs.py``; the slot hijack under TLS and
node authentication: ``test_flower_deploy.py``), and what a site says while it waits for its server
(docs/explanation/federation.md, "Threat model")."""
from __future__ import annotations

import json

import numpy as np
import pytest

from fedtiny.trainer import aggregation as agg
from fedtiny.trainer.strategies import FedAvg, FedMetaAlign, Reply


# --- untrusted numbers: norm bound, weight cap, sample counts fixed at join ------------------------
def test_clip_deltas_bounds_every_norm_by_a_multiple_of_the_median():
    d = np.array([[3.0, 4.0], [0.0, 1.0], [600.0, 800.0], [1.0, 0.0]])     # norms 5, 1, 1000, 1
    c, scale = agg.clip_deltas(d, 2.0)                                       # tau = 2 * median = 2 * 3
    assert np.allclose(np.linalg.norm(c, axis=1), [5, 1, 6, 1])
    assert np.allclose(c[2] / np.linalg.norm(c[2]), d[2] / 1000)             # the direction is kept
    assert np.allclose(scale, [1, 1, 6 / 1000, 1])
    same, s = agg.clip_deltas(d, 0.0)                                        # off
    assert np.array_equal(same, d) and np.all(s == 1)


def test_cap_weights_moves_the_excess_to_the_others_in_proportion():
    w = agg.cap_weights(np.array([0.8, 0.15, 0.05]), 0.5)
    assert np.allclose(w, [0.5, 0.375, 0.125]) and np.isclose(w.sum(), 1)
    w = agg.cap_weights(np.array([0.7, 0.25, 0.05, 0.0]), 0.3)   # each hand-over pushes the next one over
    assert np.allclose(w, [0.3, 0.3, 0.3, 0.1]) and np.isclose(w.sum(), 1)
    assert np.allclose(agg.cap_weights(np.array([0.9, 0.1]), 0.2), [0.5, 0.5])   # at least 1/K
    assert np.allclose(agg.cap_weights(np.array([1.0, 0.0, 0.0]), 0.5), [0.5, 0.25, 0.25])
    assert np.array_equal(agg.cap_weights(np.array([0.9, 0.1]), 1.0), [0.9, 0.1])


def _replies(global_w, deltas, n, acc):
    return [Reply(k, [global_w[0] + np.asarray(d, np.float32)], {"n": n[k], "acc": acc[k], "loss_before": 1.0,
                                                                  "loss_after": 0.5})
            for k, d in enumerate(deltas)]


def test_a_poisoner_cannot_own_the_aggregate():
    """One site sends its update x50 and claims accuracy 1.0 and 1e9 windows: without bounds it
    takes nearly all of FedAvg's weight and drags Fed-Meta-Align's step; with the defaults its
    weight stays <= 0.5 and its update <= 2x the median norm."""
    g = [np.zeros(4, np.float32)]
    honest = [[1.0, 0.9, 0.0, 0.1], [0.9, 1.0, 0.1, 0.0], [1.0, 1.0, 0.0, 0.0]]
    evil = list(50 * np.array([-1.0, -1.0, 0.2, 0.2]))
    deltas, n, acc = honest + [evil], [100, 120, 90, 10 ** 9], [0.8, 0.85, 0.8, 1.0]
    med = np.median(np.linalg.norm(np.array(deltas), axis=1))

    open_avg, rec = FedAvg(1).aggregate(g, _replies(g, deltas, n, acc))
    assert rec["weights"][3] > 0.99 and open_avg[0][0] < -40                 # owned
    new, rec = FedAvg(1, norm_bound=2.0, weight_cap=0.5).aggregate(g, _replies(g, deltas, n, acc))
    assert rec["weights"][3] == pytest.approx(0.5) and rec["clipped"][3] < 0.1
    assert np.linalg.norm(new[0]) <= 0.5 * 2 * med + 1.0

    fma = FedMetaAlign(1, smoothing=0.0, norm_bound=2.0, weight_cap=0.5)
    new, rec = fma.aggregate(g, _replies(g, deltas, n, acc))
    assert max(rec["weights"]) <= 0.5 + 1e-12 and np.linalg.norm(new[0]) <= 0.5 * 2 * med + 1.0


def test_sample_counts_are_fixed_when_a_site_joins():
    g = [np.zeros(2, np.float32)]
    s = FedAvg(1)
    _, rec = s.aggregate(g, _replies(g, [[1, 0], [0, 1]], [100, 100], [0.5, 0.5]))
    assert rec["weights"] == [0.5, 0.5]
    _, rec = s.aggregate(g, _replies(g, [[1, 0], [0, 1]], [100, 10 ** 9], [0.5, 0.5]))
    assert rec["weights"] == [0.5, 0.5]                                       # the later claim is ignored
    t = FedAvg(1)
    t.load_state(s.state())                                                   # checkpointed with the run
    assert t.joined_n == {0: 100, 1: 100}


def test_scaled_weight_poisoning_leaves_honest_devices_within_two_points(tmp_path):
    """The audit's attack on a real (small, in-process) run: device faulty_devices(3, 1, 0) sends
    x50 updates claiming accuracy 1.0 and 1e9 windows in every round. The honest devices' INT8
    accuracies stay within 2 points of the clean run (same seed and config; ~97 test windows per
    device, so 2 points is under two windows). Without the bounds the same attack takes every
    device below 20 % (measured: 3 %, 19 %, 3 %; not re-run here to keep the suite short)."""
    from conftest import small_config

    from fedtiny.trainer.faults import faulty_devices
    from fedtiny.trainer.pipeline import train

    bad = faulty_devices(3, 1, 0)[0]
    rep = train(small_config(samples_per_device=480, faulty=1, fault="scaled-update"), tmp_path / "poisoned")
    clean = train(small_config(samples_per_device=480), tmp_path / "clean")
    for a, b in zip(rep["devices"], clean["devices"]):
        if a["device"] != bad:
            assert abs(a["int8_acc"] - b["int8_acc"]) <= 0.02, (a, b)
    rounds = [json.loads(x) for x in (tmp_path / "poisoned" / "metrics.jsonl").read_text().splitlines()
              if '"phase2"' in x]
    assert rounds and all(r["n_samples"][bad] == 10 ** 9 for r in rounds)   # what it claimed ...
    assert all(max(r["weights"]) <= 0.5 + 1e-9 and r["clipped"][bad] < 0.1 for r in rounds)   # ... contained


# --- fake Phase-3 artifacts ------------------------------------------------------------------------
def _artifacts(run, dev: int) -> dict:
    d = run / "devices" / f"dev{dev:02d}"
    rec = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    rec = [x for x in rec if x.get("phase") == "phase3" and x.get("device") == dev][-1]
    return {"model_int8": (d / "model_int8.tflite").read_bytes(), "model_float": (d / "model_float.keras").read_bytes(),
            "device_json": json.loads((d / "device.json").read_text()), "record": rec}


def test_artifact_validation_refuses_what_the_run_did_not_make(small_run):
    from fedtiny.trainer.artifacts import ModelSignature, check_artifacts

    good = _artifacts(small_run, 0)
    sig = ModelSignature.of(good["model_int8"])
    assert check_artifacts(good, 0, sig) is None
    assert check_artifacts(_artifacts(small_run, 1), 1, sig) is None       # another device, same run shape

    def bad(**change):
        art = {**good, "device_json": dict(good["device_json"])}
        for k, v in change.items():
            if k in art:
                art[k] = v
            else:
                art["device_json"][k] = v
        return check_artifacts(art, 0, sig)

    info = good["device_json"]
    assert "not a TFLite model" in bad(model_int8=b"this is not a model, but it claims 100 %")
    assert "not a TFLite model" in bad(model_int8=good["model_int8"][:200])                # truncated
    assert "differ from the run's" in check_artifacts(good, 0, ModelSignature(
        sig.op_sequence[:-1], sig.input_shape, sig.output_shape))                          # another graph
    assert "input is" in check_artifacts(good, 0, ModelSignature(
        sig.op_sequence, (1, 99, 3), sig.output_shape))
    assert "not the hash" in bad(model_sha256="0" * 64)
    assert "in [0, 1]" in bad(int8_acc=1.5)
    assert "in [0, 1]" in bad(threshold=float("nan"))
    assert "lacks test_class_counts" in check_artifacts(
        {**good, "device_json": {k: v for k, v in info.items() if k != "test_class_counts"}}, 0, sig)
    assert "consistent counts" in bad(n_test=info["n_test"] + 1)
    assert "names device" in check_artifacts(good, 1, sig)
    assert "Keras file" in bad(model_float=b"junk")
    assert "not the model's" in bad(input_scale=info["input_scale"] * 2)
    assert "Phase-3 line" in bad(record={**good["record"], "device": 2})


def test_a_fake_artifact_is_that_sites_failed_reply_not_a_crash(tmp_path):
    """A remote site answers Phase 3 with a file that is not a TFLite model and claims 100 %: the
    server logs it as that device's failed Phase 3, stores nothing of it, keeps every other device
    and ends with the usual clear error (continue with --resume)."""
    from conftest import small_config

    from fedtiny.trainer.backends import InProcessBackend
    from fedtiny.trainer.client import SiteClient, SiteData
    from fedtiny.trainer.pipeline import InProcess, RunError, train

    class Hostile(InProcessBackend):
        remote = True

        def finalize(self, tasks):
            out = super().finalize(tasks)
            for r in out:
                if r.device == 1:
                    r.artifacts = {**r.artifacts, "model_int8": b"TFL3 but not really" * 10,
                                   "device_json": {**r.artifacts["device_json"], "int8_acc": 1.0, "float_acc": 1.0}}
            return out

    class Remote(InProcess):
        def connect(self, run):
            return Hostile([SiteClient(run.cfg, SiteData.from_prepared(run.data, i), run.engine, tmp_path / "sites")
                            for i in range(run.cfg.devices)])

    out = tmp_path / "run"
    with pytest.raises(RunError, match="did not deliver"):
        train(small_config(devices=2, rounds=1), out, backend=Remote(vectorized=False))
    lines = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    failed = [x for x in lines if x.get("phase") == "phase3" and "failed" in x]
    assert [x["device"] for x in failed] == [1] and "not a TFLite model" in failed[0]["failed"]
    assert (out / "devices" / "dev00" / "model_int8.tflite").exists()
    assert not (out / "devices" / "dev01" / "model_int8.tflite").exists()
    assert not (out / "report.json").exists()


# --- loopback means loopback -----------------------------------------------------------------------
def test_insecure_needs_an_address_that_resolves_to_loopback():
    from fedtiny.trainer.flower.processes import is_loopback

    assert is_loopback("127.0.0.1") and is_loopback("127.3.4.5") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("127.attacker.invalid")                   # spelled like loopback, resolves nowhere
    assert not is_loopback("0.0.0.0") and not is_loopback("10.1.2.3") and not is_loopback("")
    assert not is_loopback("lb.example", resolver=lambda h: ["127.0.0.1", "10.0.0.7"])   # one address is not
    assert is_loopback("lb.example", resolver=lambda h: ["127.0.0.1", "::1"])


def test_insecure_on_a_127_host_name_is_refused_by_the_commands():
    import subprocess

    from flowerfixture import fedtiny_cmd

    p = subprocess.run(fedtiny_cmd("site", "--builtin", "electrical:0", "--server", "127.attacker.invalid:9092",
                                   "--insecure"), capture_output=True, text=True, timeout=120)
    assert p.returncode == 2 and p.stderr.strip().splitlines() == [
        "error: --insecure is allowed only on loopback; the server 127.attacker.invalid is not: give TLS certificates"]


# --- a foreign run ---------------------------------------------------------------------------------
def _foreign_pyproject() -> str:
    """fedtiny's app pyproject with the outsider's name and components (its own code in the FAB)."""
    from fedtiny.trainer.flower.processes import APP_PYPROJECT

    out = (APP_PYPROJECT.replace('name = "fedtiny-federation"', 'name = "not-fedtiny"')
           .replace('publisher = "fedtiny"', 'publisher = "outsider"')
           .replace("fedtiny.trainer.flower.server_app:app", "outsider.server:app")
           .replace("fedtiny.trainer.flower.client_app:app", "outsider.client:app"))
    assert "fedtiny.trainer" not in out
    return out


FOREIGN_SERVER = '''import pathlib, time
from flwr.app import ConfigRecord, Message, RecordDict
from flwr.serverapp import ServerApp

app = ServerApp()
MARK = pathlib.Path({mark!r})


@app.main()
def main(grid, context):
    (MARK / "serverapp-ran").write_text("the outsider's ServerApp ran on the server")
    deadline = time.time() + 120
    while not list(grid.get_node_ids()) and time.time() < deadline:
        time.sleep(1)
    msgs = [Message(RecordDict({{"c": ConfigRecord({{"x": 1}})}}), dst_node_id=n, message_type="train")
            for n in grid.get_node_ids()]
    list(grid.send_and_receive(msgs, timeout=120))
'''

FOREIGN_CLIENT = '''import pathlib
from flwr.app import Message, RecordDict
from flwr.clientapp import ClientApp

app = ClientApp()
MARK = pathlib.Path({mark!r})


@app.train()
def train(msg, context):
    (MARK / "clientapp-ran").write_text(repr(dict(context.node_config)))   # the site's socket and key paths
    return Message(RecordDict(), reply_to=msg)
'''


def _submit_foreign_run(root, link_port):
    """``flwr run`` of an outsider's app (its own ServerApp and ClientApp) to the SuperLink."""
    import subprocess

    from fedtiny.trainer.flower.processes import bin_path, child_env, write_flwr_home

    app, mark = root / "outsider-app", root / "marks"
    (app / "outsider").mkdir(parents=True)
    mark.mkdir()
    (app / "pyproject.toml").write_text(_foreign_pyproject())
    (app / "outsider" / "__init__.py").write_text("")
    (app / "outsider" / "server.py").write_text(FOREIGN_SERVER.format(mark=str(mark)))
    (app / "outsider" / "client.py").write_text(FOREIGN_CLIENT.format(mark=str(mark)))
    home = write_flwr_home(root / "outsider-home", f"127.0.0.1:{link_port}")
    p = subprocess.run([bin_path("flwr"), "run", str(app), "fedtiny"], capture_output=True, text=True, timeout=600,
                       env=child_env(FLWR_HOME=home))
    assert p.returncode == 0, p.stdout + p.stderr          # Flower itself accepts the submission
    return mark


def test_a_foreign_run_never_starts_on_the_server_nor_at_a_site(tmp_path):
    """An outsider who reaches the SuperLink submits their own app. (1) The SuperLink that
    ``fedtiny server`` starts refuses to launch its ServerApp. (2) Even on a SuperLink without the
    gate (a bypassed or misconfigured server), the site refuses to launch its ClientApp: the
    outsider's code never runs at the site and never sees the site's node config (socket, key)."""
    from flowerfixture import Cluster, wait_for

    root = tmp_path / "open"
    root.mkdir()
    with Cluster(root) as c:
        port = c.superlink(gated=False)
        c.site(0, port, wait=False)            # (2)'s site starts (imports TensorFlow) while (1) runs
        with Cluster(tmp_path / "gated") as g:
            (tmp_path / "gated").mkdir()
            gport = g.superlink(gated=True)
            gmark = _submit_foreign_run(tmp_path / "gated", gport)
            refusals = tmp_path / "gated" / "link-refusals.log"
            wait_for(lambda: refusals.exists() and "refused run" in refusals.read_text(), 600,
                     "the SuperLink's refusal")
            assert "not fedtiny's" in refusals.read_text()
            assert not (gmark / "serverapp-ran").exists()

        c.wait_sites([0])
        mark = _submit_foreign_run(root, port)
        wait_for(lambda: (mark / "serverapp-ran").exists(), 600, "the outsider's ServerApp on the open SuperLink")
        site_log = root / "site0" / "site.log"
        wait_for(lambda: "refused run" in site_log.read_text(), 600, "the site's refusal")
        assert "(wrong run): its app (FAB sha256" in site_log.read_text()
        assert "refused run" in (root / "site0.log").read_text()          # on the site's terminal too
        assert not (mark / "clientapp-ran").exists()


# --- nothing calls out ---------------------------------------------------------------------------------
def test_no_flower_process_sends_telemetry_and_sites_take_tasks_promptly(tmp_path):
    """Flower posts usage events to telemetry.flower.ai unless FLWR_TELEMETRY_ENABLED=0: the CLI turns
    it off before flwr is imported, and every process it starts inherits that; the gate's environment
    (every site's SuperNode and SuperExec) has the SuperExec look for tasks every 0.2 s. A user's own
    setting is kept."""
    import os
    import subprocess
    import sys

    from fedtiny.trainer.flower import gate

    probe = ("import fedtiny.cli, flwr.supercore.telemetry as t; "
             "from fedtiny.trainer.flower.processes import child_env; "
             "print(t.FLWR_TELEMETRY_ENABLED, child_env()['FLWR_TELEMETRY_ENABLED'])")
    env = {k: v for k, v in os.environ.items() if k != "FLWR_TELEMETRY_ENABLED"}
    out = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, timeout=300)
    assert out.stdout.split() == ["0", "0"], out.stderr[-2000:]
    out = subprocess.run([sys.executable, "-c", probe], env={**env, "FLWR_TELEMETRY_ENABLED": "1"},
                         capture_output=True, text=True, timeout=300)
    assert out.stdout.split() == ["1", "1"], out.stderr[-2000:]
    assert gate.install(tmp_path / "gate", tmp_path / "refusals.log")["FLWR_SUPEREXEC_TASK_POLL_INTERVAL"] == "0.2"


# --- what a site says --------------------------------------------------------------------------------
def test_status_lines_of_the_supernode_log():
    from fedtiny.trainer.flower.site_status import status_lines

    log = ("WARNING :   Connection attempt failed, retrying in 0.98 seconds\n"
           "WARNING :   Connection attempt failed, retrying in 1.75 seconds\n"
           "INFO :      SuperNode ID: 9791107621206967379\n"
           "INFO :      Receiving: train message\n"
           "[code: 2004] Failed to activate SuperNode.\n")
    assert status_lines(log, "h:1") == [
        "waiting for server h:1 (unreachable; retrying in 1 s)", "waiting for server h:1 (unreachable; retrying in 2 s)",
        "connected to server h:1 (node 9791107621206967379)",
        "refused (identity): the server h:1 does not accept this site's key (the server's sites.toml must list "
        "this site's .pub for its device)"]


def test_a_site_without_its_server_says_so_keeps_retrying_and_stops_on_ctrl_c(tmp_path):
    import signal

    from flowerfixture import Cluster, fedtiny_cmd, wait_for

    from fedtiny.trainer.flower.processes import free_port

    with Cluster(tmp_path) as c:
        p = c.start(fedtiny_cmd("site", "--builtin", "electrical:0", "--server", f"127.0.0.1:{free_port()}",
                                "--insecure", "--work", str(tmp_path / "site")), "site.log")
        out = tmp_path / "site.log"
        wait_for(lambda: out.read_text().count("waiting for server") >= 2 or p.poll() is not None, 600,
                 "the site to report its unreachable server twice")
        assert p.poll() is None                                    # still trying
        p.send_signal(signal.SIGINT)
        assert p.wait(60) == 0
    text = out.read_text()
    assert "unreachable; retrying in" in text and text.strip().endswith("stopped") and "Traceback" not in text


# --- slot hijack: the server maps nodes to devices by their registered keys --------------------------
def test_a_node_that_claims_a_device_its_key_is_not_registered_for_is_refused(monkeypatch):
    """With node authentication the server knows each registered key's node id: node 13 (first to
    answer, claiming device 0) and node 12 (device 1's key, claiming device 0) never get a slot; the
    registered nodes serve their own devices. Without keys the first claimant would keep device 0."""
    from types import SimpleNamespace

    pytest.importorskip("flwr")
    from fedtiny.trainer.flower import backend as fb
    from fedtiny.trainer.flower.backend import FlowerBackend

    # a request only needs its destination here (Flower's Message wants a running ServerApp)
    monkeypatch.setattr(fb, "Message", lambda content, dst_node_id, **kw: SimpleNamespace(
        metadata=SimpleNamespace(dst_node_id=dst_node_id)))

    class Reply:
        def __init__(self, node, dev):
            self.metadata = SimpleNamespace(src_node_id=node, reply_to_message_id=node)
            self.content = {"reply": {"device": dev}}

        def has_error(self):
            return False

    class Grid:                                      # every node answers at once (message id: its node)
        def __init__(self, claims):
            self.claims = claims

        def get_node_ids(self):
            return list(self.claims)

        def push_messages(self, msgs):
            self.pushed = [m.metadata.dst_node_id for m in msgs]
            return self.pushed

        def pull_messages(self, ids):                # in the order they were sent
            return [Reply(n, self.claims[n]) for n in self.pushed if n in ids]

    notes = []
    b = FlowerBackend(Grid({13: 0, 11: 0, 12: 0}), {}, 2, 10, 0, note=notes.append, registered={0: 11, 1: 12})
    b.discover()
    assert b.nodes == {0: 11}
    assert any("node 13 claims device 0, but its key is registered for no device; refused" in n for n in notes)
    assert any("node 12 claims device 0, but its key is registered for device 1; refused" in n for n in notes)
    open_link = FlowerBackend(Grid({13: 0, 21: 0}), {}, 2, 10, 0, note=notes.append)
    open_link.discover()
    assert open_link.nodes == {0: 13}                  # the hijacker keeps the real site (21) out: what keys prevent
