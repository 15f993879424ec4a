"""The board as a Flower site: three emulated Cortex-M4 boards (QEMU mps2-an386, firmware built
with ``--trainable-head`` from the small electrical run) behind ``fedtiny site --board-port``, a
SuperLink on 127.0.0.1 and ``fedtiny server --board-run``: two head-only rounds and Phase 3 run on
the boards.

Checked: the federation finishes; the final global head equals what the host twin predicts
(``fedtiny.headtwin`` on the host's own features of the same windows, averaged by the same
``aggregation.head_average``) within float tolerance; a board reset in the middle of round 1 is
that site's failed reply (round 1 averages the other two; the site sends its windows again and
takes part in round 2). The reset is made deterministic by a relay between site 1 and its QEMU
pty: when the site sends its first ``htrain``, the relay resets the board through QEMU's monitor
before it passes the command on, so the board's boot banner is what the site reads next.

A board without the trainable head (the emulator) given to ``fedtiny site --board-port`` is one
``error:`` line and exit code 2.

Every QEMU, relay, SuperLink, SuperNode and site is stopped in a ``finally`` / the cluster's exit,
also on failure; every wait is on progress (a port, a line, an exit) with a hang guard only.
"""
from __future__ import annotations

import json
import os
import select
import shutil
import subprocess
import threading
import time
import tty
from pathlib import Path

import numpy as np
import pytest

from flowerfixture import Cluster, fedtiny_cmd

pytest.importorskip("flwr")

TOOLS = ("arm-none-eabi-gcc", "qemu-system-arm")
MISSING = [t for t in TOOLS if shutil.which(t) is None]
IN_CI = os.environ.get("CI", "").lower() == "true"
HANG_S = 600.0
ROUNDS, EPOCHS, PHASE3_EPOCHS = 1, 1, 1


def _qemu_board(mon: Path):
    """The qemu-m4 board with its human monitor on the unix socket ``mon`` (for system_reset)."""
    from fedtiny.codegen.boards import Board, load_board

    board = load_board("qemu-m4")
    args = list(board.qemu["args"])
    args[args.index("-monitor") + 1] = f"unix:{mon},server,nowait"
    return Board({**board.data, "qemu": {**board.qemu, "args": args}}, board.path)


class ResetRelay:
    """A pty the site opens as its board, relayed byte for byte to the QEMU pty ``board``; the
    first ``htrain`` line the site sends triggers ``system_reset`` on QEMU's monitor before it is
    passed on."""

    def __init__(self, board: str, mon: Path):
        self.mon = mon
        self.board = os.open(board, os.O_RDWR | os.O_NOCTTY)
        tty.setraw(self.board)
        self.master, self.slave = os.openpty()
        tty.setraw(self.slave)
        self.port = os.ttyname(self.slave)
        self.resets = 0
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> "ResetRelay":
        self.thread.start()
        return self

    def _run(self) -> None:
        pending = b""
        while not self._stop.is_set():
            r, _, _ = select.select([self.master, self.board], [], [], 0.1)
            if self.board in r:
                os.write(self.master, os.read(self.board, 65536))
            if self.master in r:
                try:
                    data = os.read(self.master, 65536)
                except OSError:           # the site closed its end for now
                    time.sleep(0.05)
                    continue
                pending += data
                while b"\n" in pending:
                    line, _, pending = pending.partition(b"\n")
                    if line.startswith(b"htrain") and self.resets == 0:
                        from fedtiny.codegen.qemu import monitor

                        monitor(self.mon, "system_reset", timeout=60.0)
                        self.resets += 1
                    os.write(self.board, line + b"\n")

    def stop(self) -> None:
        self._stop.set()
        self.thread.join(10)
        for fd in (self.master, self.slave, self.board):
            try:
                os.close(fd)
            except OSError:
                pass


@pytest.fixture(scope="module")
def board_elfs(small_run, tmp_path_factory):
    """Each device's firmware of the small run for qemu-m4 with the trainable head."""
    if MISSING:
        if IN_CI:
            pytest.fail(f"CI=true but {', '.join(MISSING)} missing: .ci/run must install them")
        pytest.skip(f"needs {', '.join(MISSING)}")
    from fedtiny.codegen.build import build_project

    root = tmp_path_factory.mktemp("board-site-fw")
    out = []
    for k in range(3):
        res = build_project(small_run, k, "qemu-m4", root / f"dev{k}", test_samples=2, trainable_head=True,
                            head_windows=128)
        assert res.compiled and res.head_plan, res
        out.append(res.project_dir / "build" / "firmware.elf")
    return out


def _twin(run: Path, reset_device: int) -> tuple[np.ndarray, dict]:
    """(final global head, {device: (Phase-3 head, threshold)}) as the host twin predicts them: each
    board's training replayed by ``fedtiny.headtwin`` on the host's features of the device's Phase-3
    windows, averaged as the server averages; ``reset_device`` takes no part in round 1."""
    from fedtiny import headtwin as T
    from fedtiny.bench.personalize import host_features, phase3_windows
    from fedtiny.codegen.compiled.head import global_head
    from fedtiny.trainer.aggregation import head_average
    from fedtiny.trainer.config import TrainConfig
    from fedtiny.trainer.flower.head_rounds import head_seed

    cfg = TrainConfig.from_dict(json.loads((run / "config.json").read_text()))
    head = global_head(run)
    shape = T.HeadShape(head[0].shape[0], head[0].shape[1], head[2].shape[1])
    theta = T.flatten(head)
    data = {}
    for k in range(3):
        ddir = run / "devices" / f"dev{k:02d}"
        w = phase3_windows(run, k, json.loads((ddir / "device.json").read_text()))
        q, s, z = host_features((ddir / "model_int8.tflite").read_bytes(), np.concatenate([w.x_train, w.x_val]))
        x = T.dequantize_features(q, s, z)
        data[k] = (x[:len(w.y_train)], w.y_train, x[len(w.y_train):], w.y_val)
    lr, mom = float(np.float32(0.05)), float(np.float32(0.9))

    def train(k, flat, epochs, r):
        return T.train(flat, np.zeros_like(flat), shape, data[k][0], data[k][1], epochs, head_seed(cfg.seed, k, r),
                       lr, mom, 8).flat

    for r in range(1, ROUNDS + 1):
        devs = [k for k in range(3) if not (r == 1 and k == reset_device)]
        theta, _, _ = head_average(theta, [train(k, theta, EPOCHS, r) for k in devs], [len(data[k][1]) for k in devs],
                                   cfg.norm_bound, cfg.weight_cap)
    final = {}
    for k in range(3):
        h = train(k, theta, PHASE3_EPOCHS, 0)
        final[k] = (h, T.tune(h, shape, data[k][2], data[k][3], cfg.threshold_metric)[0])
    return theta, final


def test_three_qemu_boards_federate_their_heads(small_run, board_elfs, tmp_path):
    from fedtiny.codegen.qemu import QemuBoard

    boards, relay = [], None
    try:
        with Cluster(tmp_path) as cluster:
            for k, elf in enumerate(board_elfs):
                q = QemuBoard(elf, _qemu_board(tmp_path / f"mon{k}.sock"))
                boards.append(q)
                q.start()
            relay = ResetRelay(boards[1].port, tmp_path / "mon1.sock").start()
            link_port = cluster.superlink()
            from fedtiny.trainer.flower.processes import free_port, wait_port

            out = tmp_path / "board-sites"           # the server first: it waits for the sites
            server = cluster.start(fedtiny_cmd("server", "--superlink", f"127.0.0.1:{link_port}", "--insecure",
                                               "--board-run", str(small_run), "--out", str(out),
                                               "--head-rounds", str(ROUNDS), "--head-epochs", str(EPOCHS),
                                               "--board-phase3-epochs", str(PHASE3_EPOCHS),
                                               "--work", str(tmp_path / "server-work"),
                                               "--wait", str(HANG_S), "--timeout", str(HANG_S)),
                                   "server.log", name="server")
            sites = []
            for k in range(3):                       # started together, then waited for
                port = free_port()
                board_port = relay.port if k == 1 else boards[k].port
                sites.append((port, cluster.start(
                    fedtiny_cmd("site", "--builtin", f"electrical:{k}", "--board-port", board_port,
                                "--server", f"127.0.0.1:{link_port}", "--insecure",
                                "--work", str(tmp_path / f"site{k}"), "--port", str(port)),
                    f"site{k}.log", name=f"site{k}")))
            for k, (port, p) in enumerate(sites):
                wait_port("127.0.0.1", port, HANG_S, p, f"site {k}", tmp_path / f"site{k}.log")
            try:
                rc = server.wait(HANG_S * 2)
            except subprocess.TimeoutExpired:
                pytest.fail("fedtiny server --board-run hung:\n" + (tmp_path / "server.log").read_text()[-3000:])
            log = (tmp_path / "server.log").read_text()
            assert rc == 0, log[-3000:] + "\n" + (tmp_path / "site1.log").read_text()[-2000:]
            site1 = (tmp_path / "site1.log").read_text()
    finally:
        if relay is not None:
            relay.stop()
        for q in boards:
            q.stop()
    assert all(not q.alive() for q in boards)
    assert relay.resets == 1
    rec = json.loads((out / "federation.json").read_text())
    assert sorted(rec["joined"]) == ["0", "1", "2"] and not rec["failed_join"], rec
    (r1,) = rec["round_records"]
    # the reset in round 1 is device 1's failed reply, not a failed run: the other two are averaged
    assert r1["devices"] == [0, 2] and list(r1["failed"]) == ["1"] and "reset" in r1["failed"]["1"], r1
    assert "head round 1: 2 board(s) averaged; failed: device 1" in log
    assert "reset during 'htrain'" in site1
    # the aggregated head is the host twin's
    heads = np.load(out / "heads.npz")
    twin, twin_final = _twin(small_run, reset_device=1)
    np.testing.assert_allclose(heads["global"], twin, rtol=0, atol=1e-6)
    # Phase 3 ran on every board from it (device 1's board got its windows again first): the
    # personalized heads and thresholds are the twin's; the embedded test windows were counted
    for k in range(3):
        m = rec["phase3"][str(k)]
        assert "error" not in m and m["test"]["n"] == 2 and m["clock"] == "icount", (m, site1[-3000:])
        assert m["rejoined"] is (k == 1), m
        np.testing.assert_allclose(heads[f"device{k}"], twin_final[k][0], rtol=0, atol=1e-6)
        assert abs(m["threshold"] - twin_final[k][1]) <= 1e-6, (k, m["threshold"], twin_final[k][1])


def test_board_without_trainable_head_is_one_error_line(small_run, tmp_path):
    from click.testing import CliRunner

    from fedtiny.bench.emulator import Emulator
    from fedtiny.cli import main

    with Emulator(small_run, 0) as emu:
        r = CliRunner().invoke(main, ["site", "--builtin", "electrical:0", "--board-port", emu.port_path,
                                      "--server", "127.0.0.1:9", "--insecure", "--work", str(tmp_path / "w")])
    assert r.exit_code == 2, r.output
    lines = r.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "head" in lines[0], r.output


# ----------------------------------------------------------------------------- the server's arithmetic

def test_head_average_is_fedavg_bounded_like_every_update():
    from fedtiny.trainer.aggregation import fedavg, head_average

    rng = np.random.default_rng(0)
    g = rng.normal(size=12).astype(np.float32)
    heads = [g + rng.normal(scale=0.1, size=12).astype(np.float32) for _ in range(3)]
    new, f, scale = head_average(g, heads, [10, 20, 30], norm_bound=0.0, weight_cap=1.0)
    assert new.dtype == np.float32 and np.allclose(f, [1 / 6, 2 / 6, 3 / 6]) and np.all(scale == 1)
    np.testing.assert_allclose(new, fedavg([[h] for h in heads], [10, 20, 30])[0], atol=1e-6)
    # an outlier's update is clipped to norm_bound x the median norm; no weight above the cap
    bad = heads[:2] + [g + 100.0]
    new, f, scale = head_average(g, bad, [10, 10, 80], norm_bound=2.0, weight_cap=0.5)
    d = np.stack([h - g for h in bad]).astype(np.float64)
    tau = 2.0 * np.median(np.linalg.norm(d, axis=1))
    assert scale[2] < 1 and np.isclose(np.linalg.norm(d[2]) * scale[2], tau) and max(f) <= 0.5 + 1e-12
    assert np.linalg.norm(new - g) <= tau + 1e-4
    with pytest.raises(ValueError):
        head_average(g, heads, [10, 0, 5], 2.0, 0.5)


def test_refuse_head_names_what_is_wrong():
    from fedtiny.trainer.flower.head_rounds import refuse_head
    from fedtiny.trainer.strategies import Reply

    ok = np.zeros(5, np.float32)
    assert refuse_head(Reply(0, [ok], {"n": 7}), 5, 7) is None
    assert "reset" in refuse_head(Reply(0, error="site error: BoardReset: the board reset"), 5, 7)
    assert "no head" in refuse_head(Reply(0, None, {"n": 7}), 5, 7)
    assert "shape" in refuse_head(Reply(0, [np.zeros(6, np.float32)], {"n": 7}), 5, 7)
    assert "shape" in refuse_head(Reply(0, [np.zeros(5, np.int32)], {"n": 7}), 5, 7)
    assert "non-finite" in refuse_head(Reply(0, [np.array([0, 0, np.nan, 0, 0], np.float32)], {"n": 7}), 5, 7)
    assert "at join" in refuse_head(Reply(0, [ok], {"n": 9}), 5, 7)


def test_board_run_options_are_checked_before_anything_starts(tmp_path):
    from click.testing import CliRunner

    from fedtiny.cli import main

    def run(*args):
        r = CliRunner().invoke(main, ["server", "--insecure", *args])
        lines = r.output.strip().splitlines()
        assert r.exit_code == 2 and len(lines) == 1 and lines[0].startswith("error: "), r.output
        return lines[0]

    assert "drop --rounds" in run("--board-run", str(tmp_path), "--rounds", "3")
    assert "--head-rounds need(s) --board-run" in run("--head-rounds", "2")
    assert "not a finished run" in run("--board-run", str(tmp_path))
