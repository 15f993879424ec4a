"""Live mode and capture on the emulated Cortex-M4 (qemu-m4, ``--input sensor --sensor sim``).

The firmware plays an int16 recording embedded in flash, one frame per interrupt of the CMSDK
TIMER0 at the model's rate, through the sample FIFO into front end + model every hop. Checked:

* live decisions equal the host's on the same windows (window k = samples [k*hop, k*hop + win),
  the host INT8 model via tflite-micro on ``fedtiny.frontend.raw_input`` of the same counts): every
  event's counter, class, score and threshold, and every inference within the hop's budget;
* a fault segment raises its event within one hop of the first window that lies wholly in it;
* capture reproduces the embedded samples exactly (the recording starts over at its end), and
  ``capture N`` ends after N frames with ``capend``;
* (lost frames are tested on the host build, tests/test_live_host.py: on QEMU a host that stops
  reading freezes the whole machine, timer included, because QEMU's UART write to the pty blocks
  the emulated CPU; measured: a 3 s stall of ``capture 0`` lost no frame and sampled none);
* the build measures front end + model on QEMU and records it (the refusal over budget:
  tests/test_live_host.py), and refuses a sensor the board does not have, a bad hop and a bad
  recording (one error).

Waits are on lines (progress), bounded by HANG_S; every QEMU is stopped in a ``finally``.
"""
from __future__ import annotations

import os
import shutil

import numpy as np
import pytest

from fedtiny.firmware import protocol as P

from test_qemu_m4 import Pty, cmd

TOOLS = ("arm-none-eabi-gcc", "qemu-system-arm")
MISSING = [t for t in TOOLS if shutil.which(t) is None]
pytestmark = pytest.mark.skipif(bool(MISSING) and os.environ.get("CI", "").lower() != "true",
                                reason=f"needs {', '.join(MISSING)}")
HOP = 20


def _host_decisions(rd, counts: np.ndarray, win: int, hop: int, until: int):
    """(n, pred, score) of every window k ending at n = k*hop + win <= until, on the host: the
    live twin (``fedtiny.live``: the INT8 model via tflite-micro on ``fedtiny.frontend.raw_input``
    of the same counts, the trainer's threshold rule) over the recording played from its start."""
    from fedtiny import live as L

    model = L.LiveModel.from_run(rd.run_dir, rd.device)
    assert model.window == win, (model.window, win)
    played = np.resize(np.asarray(counts), (until, counts.shape[1]))
    return [(d.n, d.pred, d.score) for d in L.live_decisions(played, model, hop)]


def _events_of(decisions):
    out, last = [], None
    for n, p, sc in decisions:
        if p != last:
            out.append((n, p, sc))
            last = p
    return out


class Board:
    """A running live firmware and our end of its UART."""

    def __init__(self, elf):
        from fedtiny.codegen.boards import load_board
        from fedtiny.codegen.qemu import QemuBoard

        self.q = QemuBoard(elf, load_board("qemu-m4"))
        self.pty = None

    def __enter__(self):
        self.q.start()
        self.pty = Pty(self.q.port)
        self.pty.sync()
        return self

    def __exit__(self, *exc):
        try:
            if self.pty is not None:
                self.pty.close()
        finally:
            self.q.stop()
        assert not self.q.alive()

    def msg(self):
        m = P.parse_line(self.pty.line())
        assert m is not None
        return m

    def capture(self, n_frames: int) -> list:
        return self.pty.ask(cmd(f"capture {n_frames}"))


def _frames_and_gaps(msgs, channels: int):
    """{counter: frame} of the frames lines and [(i, n)] of the gap lines; checks they tile."""
    got, gaps, nxt = {}, [], 0
    for m in msgs:
        if isinstance(m, P.Frames):
            assert m.index == nxt and len(m.data) == m.count * channels, m.index
            for j in range(m.count):
                got[m.index + j] = m.data[j * channels:(j + 1) * channels]
            nxt = m.index + m.count
        elif isinstance(m, P.Gap):
            assert m.index == nxt and m.count > 0
            gaps.append((m.index, m.count))
            nxt = m.index + m.count
    return got, gaps, nxt


@pytest.fixture(scope="module")
def live_fw(small_run, tmp_path_factory):
    """The electrical run's device 0 as a live qemu-m4 firmware playing its test windows."""
    from fedtiny.bench.rundata import load_run_device
    from fedtiny.codegen.build import build_project
    from fedtiny.codegen.live import recording_from_run
    from fedtiny.codegen.tflite_model import read_model

    rd = load_run_device(small_run, 0)
    res = build_project(small_run, 0, "qemu-m4", tmp_path_factory.mktemp("live") / "fw", test_samples=2,
                        input="sensor", hop=HOP)
    assert res.compiled
    facts = read_model(rd.model_bytes)
    units = facts.input.scale * (rd.x_int8.astype(np.float64) - facts.input.zero_point)
    return rd, res.project_dir, recording_from_run(units, None)


def test_live_decisions_equal_host_and_capture_is_exact(live_fw):
    rd, proj, rec = live_fw
    win, ch = rec.shape[0] // len(rd.y), rec.shape[1]
    manifest = __import__("json").loads((proj / "fedtiny_build.json").read_text())
    assert manifest["input"] == "sensor" and manifest["live"]["hop"] == HOP
    # the build measured front end + model on QEMU (probe) and found it within the hop's budget
    assert 0 < manifest["live"]["measured_instructions"] <= manifest["live"]["budget"]
    with Board(proj / "build" / "firmware.elf") as b:
        banner = b.pty.ask(cmd("info"))[0]
        assert banner.input == "sensor" and banner.clock == "icount"
        os.write(b.pty.fd, cmd("live"))
        stream = b.msg()
        # electrical channels differ in full scale (A, pu): channel 0's scale, unit=mixed
        scale0 = float(P._fixed6(rd.info["channel_scale"][0] / 32767))
        assert stream == P.Stream(2000, ch, win, HOP, HOP * 10 ** 9 // 2000, "sim", scale0, "mixed")
        events, beat = [], None
        while beat is None:                       # the first beat comes after `rate` frames
            m = b.msg()
            if isinstance(m, P.Event):
                events.append(m)
            else:
                assert isinstance(m, P.Beat), m
                beat = m
        assert b.pty.ask(cmd("stop"))[-1] == P.Ready()
        # capture: more frames than the recording holds (it starts over), exactly as embedded
        n_cap = len(rec) + 50
        msgs = b.capture(n_cap)
        assert isinstance(msgs[0], P.Stream) and msgs[-1] == P.Ready()
        end = msgs[-2]
        assert isinstance(end, P.CaptureEnd) and end.sent + end.dropped == n_cap
        got, gaps, nxt = _frames_and_gaps(msgs, ch)
        assert nxt == n_cap and sum(g for _, g in gaps) == end.dropped and len(got) == end.sent
        tiled = np.tile(rec, (2, 1))
        for i, frame in got.items():
            assert frame == tuple(int(v) for v in tiled[i]), i
        assert end.sent > n_cap // 2
        # windows firmware commands still work on a sensor firmware
        assert isinstance(b.pty.ask(cmd("run"))[-2], P.Summary)
    assert beat.n == 2000 and beat.dropped == 0 and beat.budget == stream.budget
    host = _events_of(_host_decisions(rd, rec, win, HOP, beat.n))
    board = [(e.n, e.pred, e.score) for e in events if e.n <= beat.n]
    assert board == [(n, p, float(P._fixed6(s))) for n, p, s in host]
    assert len(board) >= 3
    assert all(e.threshold == float(P._fixed6(rd.info["threshold"])) for e in events)
    assert all(0 < e.micros <= stream.budget for e in events) and 0 < beat.us_max <= stream.budget


def test_fault_segment_raises_its_event_within_one_hop(live_fw, tmp_path):
    """A recording of a normal window repeated, then a fault window repeated: the fault event
    comes with the first window that lies wholly in the fault segment (or earlier)."""
    from fedtiny.codegen.build import build_project

    rd, _, rec = live_fw
    win, ch = rec.shape[0] // len(rd.y), rec.shape[1]
    windows = rec.reshape(len(rd.y), win, ch)
    decisions = _host_decisions(rd, rec, win, win, len(rec))     # hop = win: window k = test window k
    normal = next(k for k, (_, p, _) in enumerate(decisions) if p == 0)
    fault = next(k for k, (_, p, _) in enumerate(decisions) if p != 0 and rd.y[k] == p)
    seg = np.concatenate([windows[normal]] * 4 + [windows[fault]] * 4)
    start = 4 * win                                                # first sample of the fault segment
    np.save(tmp_path / "rec.npy", seg)
    res = build_project(rd.run_dir, 0, "qemu-m4", tmp_path / "fw", test_samples=1, input="sensor",
                        hop=HOP, recording=tmp_path / "rec.npy")
    with Board(res.project_dir / "build" / "firmware.elf") as b:
        os.write(b.pty.fd, cmd("live"))
        assert isinstance(b.msg(), P.Stream)
        events = []
        while not events or not (events[-1].n > start and events[-1].pred != 0):
            m = b.msg()
            if isinstance(m, P.Event):
                events.append(m)
        assert b.pty.ask(cmd("stop"))[-1] == P.Ready()
    first_fault = events[-1]
    assert first_fault.n <= start + win + HOP - 1 and first_fault.pred == int(rd.y[fault])
    host = _events_of(_host_decisions(rd, seg, win, HOP, first_fault.n))
    assert [(e.n, e.pred) for e in events] == [(n, p) for n, p, _ in host]


@pytest.mark.parametrize("kwargs, needle", [
    (dict(sensor="imu"), "has no imu sensor"),
    (dict(sensor="thermo"), "unknown sensor"),
    (dict(hop=0), "--hop must be"),
    (dict(hop=41), "--hop must be"),
    (dict(recording="missing.npy"), "cannot read recording"),
])
def test_build_refuses_bad_sensor_options(small_run, tmp_path, kwargs, needle):
    from fedtiny.codegen.build import build_project
    from fedtiny.codegen.errors import CodegenError

    with pytest.raises(CodegenError, match=needle):
        build_project(small_run, 0, "qemu-m4", tmp_path / "fw", input="sensor", compile=False, **kwargs)
    assert not (tmp_path / "fw").exists()
