"""A real loopback deployment: one SuperLink and three SuperNodes (``fedtiny site``) on
127.0.0.1, driven by ``fedtiny server``. Every process runs in its own process group and is
stopped when the test ends, also on failure; every wait is bounded."""
from __future__ import annotations

import json
import re
import signal
import subprocess

import numpy as np
import pytest

from conftest import SMALL, report_without_timings as _report
from flowerfixture import Cluster, fedtiny_cmd, make_tls, wait_for

pytest.importorskip("flwr")

# what these tests check (messages, files, equality with train, failure handling) does not depend on
# how long the server's Phase 0 and the sites' Phase 3 train: one epoch each
FEW_EPOCHS = {"phase0_epochs": 1, "phase3_epochs": 1}

def _server(cluster, link_port, run, cfg_file, *extra, devices=3):
    return cluster.start(fedtiny_cmd("server", "--superlink", f"127.0.0.1:{link_port}", "--insecure",
                                     "--devices", str(devices), "--config", str(cfg_file), "--out", str(run), *extra),
                         "server.log", name="server")


def _finish(proc, cluster, timeout=1200):          # a hang guard: loaded, a run took 330 s
    try:
        rc = proc.wait(timeout)
    except subprocess.TimeoutExpired:
        pytest.fail("fedtiny server did not finish in time:\n" + (cluster.root / "server.log").read_text()[-3000:])
    if rc != 0:                                   # the server's log, and why a step failed
        failed = [x for x in _metrics_lines(cluster.root) if "failed" in x]
        pytest.fail((cluster.root / "server.log").read_text()[-3000:] + f"\nfailed steps: {failed}")


def _metrics_lines(root) -> list[str]:
    return [line for m in root.glob("*/metrics.jsonl") for line in m.read_text().splitlines()]


def _fleet_per_site(tmp_path):
    """The small built-in electrical fleet exported (``fedtiny data export``) as FLEET + POOL, and each
    device folder copied, with the fleet.toml, into a temporary folder of its own (one per site)."""
    import shutil

    from click.testing import CliRunner

    from fedtiny.cli import main

    fleet, pool = tmp_path / "export" / "F", tmp_path / "server-data" / "P"
    res = CliRunner().invoke(main, ["data", "export", "electrical", "--devices", "3", "--seed", "0",
                                    "--samples-per-device", "160", "--public-samples", "300", "--out", str(fleet),
                                    "--public-out", str(pool)])
    assert res.exit_code == 0, res.output
    sites = []
    for k in range(3):
        own = tmp_path / f"site{k}-data"
        own.mkdir()
        shutil.copy(fleet / "fleet.toml", own / "fleet.toml")
        shutil.copytree(fleet / f"dev{k:02d}", own / f"dev{k:02d}")
        sites.append(own / f"dev{k:02d}")
    return fleet, pool, sites


def test_server_and_three_sites_write_the_run_train_writes(tmp_path):
    """Each site holds one device folder in a temporary folder no other process is given; the server
    holds the public pool only. TLS and node authentication, with a CA, a SuperLink certificate and
    site keys made here: `fedtiny server --sites` registers the three sites' keys; a fourth SuperNode
    with a key of its own claims device 0 (the slot hijack) and is refused at the door. The run equals
    `train --fleet FLEET --public POOL` in process."""
    import shutil

    from fedtiny.trainer.config import TrainConfig
    from fedtiny.trainer.data.fleetdir import run_fields
    from fedtiny.trainer.flower import identity
    from fedtiny.trainer.flower.processes import free_port, wait_port
    from fedtiny.trainer.pipeline import InProcess, train

    fleet, pool, sites = _fleet_per_site(tmp_path)
    small = {k: v for k, v in {**SMALL, **FEW_EPOCHS}.items() if k != "samples_per_device"}   # folders hold windows
    cfg = TrainConfig(**{**small, **run_fields(str(pool), fleet), "public": str(pool), "rounds": 1})
    ref = tmp_path / "inprocess"
    train(cfg, ref, backend=InProcess(vectorized=False))     # the per-device engine sites run
    shutil.rmtree(fleet.parent)                              # from here on, each device exists at its site only
    run = tmp_path / "run"
    tls = make_tls(tmp_path / "tls")
    keys = [identity.keygen(tmp_path / "keys" / f"dev{k:02d}.key")[0] for k in range(3)]
    hijack = identity.keygen(tmp_path / "keys" / "outsider.key")[0]
    (tmp_path / "sites.toml").write_text("[sites]\n" + "".join(f'dev{k:02d} = "keys/dev{k:02d}.key.pub"\n'
                                                                for k in range(3)))
    port = free_port()
    with Cluster(tmp_path) as c:
        srv = c.start(fedtiny_cmd("server", "--host", "127.0.0.1", "--port", str(port), "--ssl-certfile",
                                  str(tls["cert"]), "--ssl-keyfile", str(tls["key"]), "--ssl-ca-certfile",
                                  str(tls["ca"]), "--sites", str(tmp_path / "sites.toml"), "--devices", "3",
                                  "--config", str(c.small_config(samples_per_device=400, **FEW_EPOCHS)), "--out", str(run),
                                  "--rounds", "1", "--public", str(pool), "--device-names", "dev00,dev01,dev02",
                                  "--wait", "240", "--timeout", "300", "--work", str(tmp_path / "work")),
                      "server.log", name="server")
        wait_for(lambda: "registered 3 site key(s)" in (tmp_path / "server.log").read_text() or srv.poll() is not None,
                 600, "the server to register the site keys")
        wait_port("127.0.0.1", port, 30, srv, "the SuperLink", tmp_path / "server.log")
        outsider = c.start(fedtiny_cmd("site", "--builtin", "electrical:0", "--server", f"127.0.0.1:{port}",
                                       "--root-certificates", str(tls["ca"]), "--auth-key", str(hijack),
                                       "--work", str(tmp_path / "outsider")), "outsider.log", name="outsider")
        for k in range(3):
            c.site(k, port, ca=tls["ca"], key=keys[k], data=sites[k], wait=False)
        c.wait_sites(range(3))
        assert outsider.wait(600) == 2                          # refused: it never joined (hang guard)
        assert "refused (identity)" in (tmp_path / "outsider.log").read_text()
        _finish(srv, c)
    assert "connected to server" in (tmp_path / "site0" / "site.log").read_text()
    a, b = _report(run), _report(ref)
    # the same words on the server (which never saw the fleet folder) as in process
    assert a.pop("dataset") == b.pop("dataset") == f"fleet of 3 devices (dev00, dev01, dev02); public pool {pool.name}"
    assert a == b                                             # accuracies, thresholds, model bytes, names
    assert (run / "metrics.jsonl").read_text() == (ref / "metrics.jsonl").read_text()
    for k in range(3):
        d = f"dev{k:02d}"
        assert (run / "devices" / d / "model_int8.tflite").read_bytes() == \
            (ref / "devices" / d / "model_int8.tflite").read_bytes()
        assert not (run / "devices" / d / "test_split.npz").exists()     # the test windows stay at the site
        za = np.load(tmp_path / f"site{k}" / "devices" / d / "test_split.npz")
        zb = np.load(ref / "devices" / d / "test_split.npz")
        assert all(np.array_equal(za[n], zb[n]) for n in zb.files)
        # one site process answered every request: TensorFlow was imported once per site
        log = (tmp_path / f"site{k}" / "site.log").read_text()
        assert f"device dev{k:02d} ({sites[k]}) serving" in log
        serving = re.findall(r"serving in process (\d+)", log)
        answered = re.findall(r"answered \w+ .*\(process (\d+)\)", log)
        assert len(serving) == 1 and len(answered) >= 4 and set(answered) == set(serving)


def test_a_killed_site_does_not_end_the_round_and_a_killed_server_resumes(tmp_path):
    """Site 1 of two is killed during round 1 (the whole site machine, as a crash: its SuperNode says
    nothing): the SuperLink reports its node unavailable once its heartbeats stop (Flower: within
    2 x 30 s) and the round aggregates site 0 (--min-sites 1); the live site has the whole --timeout,
    so load cannot fail it. The server is then killed (-9) after round 1; site 1 restarts and
    rejoins; `fedtiny server --resume` finishes the run with both. (Two sites, not three: what is
    checked is the same, and a third TensorFlow site process only slows the machine.)"""
    run = tmp_path / "run"
    with Cluster(tmp_path) as c:
        port = c.superlink()
        for k in range(2):
            c.site(k, port, wait=False)
        c.wait_sites(range(2))
        args = ("--rounds", "2", "--min-sites", "1", "--wait", "240", "--timeout", "600")
        cfg = c.small_config(**FEW_EPOCHS)
        srv = _server(c, port, run, cfg, *args, devices=2)
        log1 = tmp_path / "site1" / "site.log"
        wait_for(lambda: "request fit device 1 phase phase2 round 1" in log1.read_text(), 900,
                 "round 1 to reach site 1")
        c.kill_tree("site1")                                   # the site and everything it started
        c.sites[1].wait(30)
        wait_for(lambda: not c.marked("site1"), 30, "every process of site 1 to end")

        def done():
            p = run / "state" / "progress.json"
            return p.exists() and "round01" in json.loads(p.read_text())["done"]
        wait_for(done, 600, "round 1 to end without site 1")
        Cluster.kill(srv, signal.SIGKILL)                      # kill -9 of fedtiny server alone
        srv.wait(30)

        def serverapp_alive():                                 # it runs under the SuperLink, not the server
            for pid in c.marked("superlink.log"):
                try:
                    if b"flwr-serverapp" in open(f"/proc/{pid}/cmdline", "rb").read():
                        return True
                except OSError:
                    pass
            return False
        wait_for(lambda: not serverapp_alive(), 60, "the orphaned ServerApp to stop")
        assert not (run / "report.json").exists()
        c.site(1, port)                                        # restarted: it rejoins
        srv = _server(c, port, run, cfg, *args, "--resume", devices=2)
        _finish(srv, c)
    lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    r1, r2 = [x for x in lines if x["phase"] == "phase2"]
    assert r1["devices"] == [0] and "Node Unavailable" in r1["failed"]["1"] and len(r1["weights"]) == 1
    assert "failed" not in r2 and len(r2["weights"]) == 2       # the restarted site is back in round 2
    rep = json.loads((run / "report.json").read_text())
    assert [d["device"] for d in rep["devices"]] == [0, 1]
    assert (tmp_path / "site1" / "devices" / "dev01" / "test_split.npz").exists()
    assert "resuming" in (tmp_path / "server.log").read_text()


def test_a_site_that_never_connects_is_a_clear_error(tmp_path):
    from fedtiny.trainer.flower.processes import free_port

    with Cluster(tmp_path) as c:
        p = c.start(fedtiny_cmd("server", "--insecure", "--port", str(free_port()), "--devices", "2",
                                "--rounds", "1", "--config", str(c.small_config()), "--out", str(tmp_path / "run"),
                                "--wait", "3"), "server.log")
        rc = p.wait(300)
    out = (tmp_path / "server.log").read_text()
    assert rc == 2, out[-2000:]
    assert "error: no site connected for device(s) 0, 1 within --wait 3 s" in out
    assert "Traceback" not in out


def test_insecure_is_refused_off_loopback():
    p = subprocess.run(fedtiny_cmd("site", "--builtin", "electrical:0", "--server", "10.1.2.3:9092", "--insecure"),
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 2 and p.stderr.strip().splitlines() == [
        "error: --insecure is allowed only on loopback; the server 10.1.2.3 is not: give TLS certificates"]
    p = subprocess.run(fedtiny_cmd("server", "--host", "0.0.0.0", "--insecure", "--devices", "2"),
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 2 and "allowed only on loopback" in p.stderr


def test_a_taken_port_is_refused_before_anything_starts(tmp_path):
    import socket

    from fedtiny.trainer.flower.processes import free_port

    with socket.socket() as holder, Cluster(tmp_path) as c:
        port = free_port()
        holder.bind(("127.0.0.1", port))
        holder.listen()
        p = c.start(fedtiny_cmd("server", "--insecure", "--port", str(port), "--devices", "2",
                                "--out", str(tmp_path / "run"), "--wait", "3", "--timeout", "5"), "server.log")
        try:
            rc = p.wait(300)                           # hang guard only
        except subprocess.TimeoutExpired:
            pytest.fail("fedtiny server did not stop:\n" + (tmp_path / "server.log").read_text()[-3000:])
    out = (tmp_path / "server.log").read_text()
    assert rc == 2, out
    assert out.strip().splitlines() == [
        f"error: --port {port}: cannot listen on 127.0.0.1:{port} (Address already in use); another program "
        "holds it: choose another --port, or give --superlink HOST:PORT to use a running SuperLink"]
    assert not (tmp_path / "run").exists() and not (tmp_path / ".run.flower").exists()


def test_the_port_owner_is_found_by_process():
    import os
    import socket

    from fedtiny.trainer.flower.processes import free_port, listening_pids

    with socket.socket() as s:
        port = free_port()
        s.bind(("127.0.0.1", port))
        assert os.getpid() not in listening_pids(port)      # bound, not listening
        s.listen()
        assert os.getpid() in listening_pids(port)


def test_replies_are_taken_up_as_they_come_and_a_silent_site_times_out(monkeypatch):
    """``exchange`` asks for replies after 0.2 s, then at doubling pauses up to 1 s (not Flower's fixed
    3 s), and returns once every message has its reply; a site that never answers is given up after
    the timeout, the others' replies kept. A fake clock: no wall time is measured or waited for."""
    from types import SimpleNamespace

    from fedtiny.trainer.flower import backend as fb

    clock = SimpleNamespace(now=0.0)
    monkeypatch.setattr(fb, "time", SimpleNamespace(monotonic=lambda: clock.now,
                                                    sleep=lambda s: setattr(clock, "now", clock.now + s)))

    class Grid:                     # message k is answered once the clock passes answer_at[k] (None: never)
        def __init__(self, answer_at):
            self.answer_at, self.pulls = answer_at, 0

        def push_messages(self, msgs):
            return list(range(len(msgs)))

        def pull_messages(self, ids):
            self.pulls += 1
            return [SimpleNamespace(metadata=SimpleNamespace(reply_to_message_id=k)) for k in sorted(ids)
                    if self.answer_at[k] is not None and self.answer_at[k] <= clock.now]

    g = Grid([0.1, 2.5])
    got = fb.exchange(g, ["a", "b"], timeout=600)
    assert sorted(m.metadata.reply_to_message_id for m in got) == [0, 1]
    assert clock.now == pytest.approx(0.2 + 0.4 + 0.8 + 1.0 + 1.0) and g.pulls == 5   # within a second of 2.5 s
    clock.now = 0.0
    g = Grid([0.0, None])
    got = fb.exchange(g, ["a", "b"], timeout=40)
    assert [m.metadata.reply_to_message_id for m in got] == [0]      # the answer that came is kept
    assert clock.now == pytest.approx(40.0) and g.pulls < 45         # the silent one: waited out, once a second
    assert fb.exchange(g, [], timeout=40) == [] and clock.now == pytest.approx(40.0)


def test_a_node_the_superlink_answers_for_fails_its_own_device(monkeypatch):
    """The SuperLink answers a request to a node that stopped sending heartbeats with Flower's "Node
    Unavailable" error, from the SuperLink's own node id: the failure is that device's, with Flower's
    reason (matched by message id), and a node that stays silent fails with "no reply within"."""
    from types import SimpleNamespace

    from fedtiny.trainer.backends import Task
    from fedtiny.trainer.flower import backend as fb

    monkeypatch.setattr(fb, "Message", lambda content, dst_node_id, **kw: SimpleNamespace(
        metadata=SimpleNamespace(dst_node_id=dst_node_id, message_id=None)))
    clock = SimpleNamespace(now=0.0)
    monkeypatch.setattr(fb, "time", SimpleNamespace(monotonic=lambda: clock.now,
                                                    sleep=lambda s: setattr(clock, "now", clock.now + s)))

    class Gone:                                   # what the SuperLink sends for an unavailable node
        def __init__(self, msg_id):
            self.metadata = SimpleNamespace(src_node_id=0, reply_to_message_id=msg_id)
            self.error = SimpleNamespace(reason="Error: Node Unavailable - no heartbeat", code=5)

        def has_error(self):
            return True

    class Grid:
        def get_node_ids(self):
            return [11, 12]

        def push_messages(self, msgs):
            for k, m in enumerate(msgs):
                m.metadata.message_id = f"m{k}-{m.metadata.dst_node_id}"
            self.sent = msgs
            return [m.metadata.message_id for m in msgs]

        def pull_messages(self, ids):             # node 11 is gone, node 12 never answers
            return [Gone(m.metadata.message_id) for m in self.sent
                    if m.metadata.dst_node_id == 11 and m.metadata.message_id in ids]

    b = fb.FlowerBackend(Grid(), {}, 2, 40, 0, note=lambda _: None)
    b.nodes = {0: 11, 1: 12}
    r0, r1 = b.evaluate([Task(0, None, {"phase": "phase2"}), Task(1, None, {"phase": "phase2"})])
    assert r0.error == "site error: Error: Node Unavailable - no heartbeat"
    assert r1.error.startswith("no reply within 40 s")
    assert b.nodes == {}                          # both asked again before the next request
