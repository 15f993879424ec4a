"""A port that never carries a fedtiny frame (another program, a wrong baud rate) is an error in
seconds, not after every retry's timeout; a noisy link with intact frames keeps
the patient behaviour (tests/test_bench.py: corruption, stalls, dropped bytes)."""
from __future__ import annotations

import os
import random
import threading
import time

import pytest
from click.testing import CliRunner

from fedtiny.bench import Emulator, bench_device
from fedtiny.bench.cli import bench


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    from test_bench import shared_run

    return shared_run(tmp_path_factory)


class _Streamer:
    """A pty whose "device" side streams ``chunk()`` forever and ignores what it is sent."""

    def __init__(self, chunk):
        self.master, self.slave = os.openpty()
        import tty

        tty.setraw(self.slave)
        os.set_blocking(self.master, False)
        self.path = os.ttyname(self.slave)
        self.chunk = chunk
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self):
        while not self._stop.is_set():
            try:
                os.read(self.master, 4096)           # drain the host's commands
            except OSError:
                pass
            try:
                os.write(self.master, self.chunk())
            except OSError:                          # buffer full or nobody reading yet
                pass
            self._stop.wait(0.01)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(timeout=5)
        os.close(self.master)
        os.close(self.slave)


def _text():
    return b"temperature=21.5 humidity=40 status=OK\r\n" * 4


def _random_bytes(rng=random.Random(0)):
    return bytes(rng.randrange(256) for _ in range(256))


@pytest.mark.parametrize("source", [_text, _random_bytes], ids=["text", "random-bytes"])
def test_foreign_port_is_named_within_seconds(source, run, tmp_path):
    out = tmp_path / "out"
    with _Streamer(source) as port:
        t0 = time.monotonic()
        # a large --timeout: naming the port must come from what it sends, never from waiting out
        # timeouts (which would take 3 x 120 s), and no load can make a healthy run reach it
        r = CliRunner().invoke(bench, ["--port", port.path, "--run", str(run), "--device", "3",
                                       "--out", str(out), "--timeout", "120"], catch_exceptions=False)
        elapsed = time.monotonic() - t0
    assert r.exit_code == 2, r.output + r.stderr
    err = r.stderr.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: "), r.stderr
    assert "no fedtiny frame in" in err[0] and "another program, or a different baud rate?" in err[0]
    assert elapsed < 120, f"took {elapsed:.1f}s: the bench waited out a --timeout instead of reading the port"
    assert "Traceback" not in r.output + r.stderr
    assert not out.exists() or not any(out.iterdir())


def test_heavily_corrupted_link_is_not_called_foreign(run):
    """30 % of lines corrupted: some frames still arrive intact, so the bench is patient and right."""
    import numpy as np

    with np.load(run / "devices" / "dev03" / "test_split.npz") as z:
        pred = z["pred_int8"]
    with Emulator(run, 3, corrupt=0.3, seed=3) as emu:
        res = bench_device(emu.port_path, run, 3, timeout=2, passes=3)
    assert res.ok and [s["pred"] for s in res.samples] == pred.tolist()
    assert res.link["dropped_lines"] > 0
