"""Live mode and capture on the emulator's simulated sensor, against the host twin (fedtiny/live.py)."""
from __future__ import annotations

import time

import numpy as np
import pytest
import serial

from fedtiny import live as L
from fedtiny.bench import Emulator
from fedtiny.firmware import protocol as P
from fedtiny.firmware import simsensor as S

FAULT = "no_fault:0.5,LLL:0.25,no_fault:0.25,LG:0.25"     # the LLL fault starts at frame 1000


class Reader:
    """Messages from a pty; every wait ends after ``idle`` seconds without a new line."""

    def __init__(self, ser):
        self.ser, self.buf = ser, b""

    def until(self, done, idle: float = 10.0) -> list:
        out, last = [], time.monotonic()
        while time.monotonic() - last < idle:
            data = self.ser.read(self.ser.in_waiting or 1)
            if data:
                last = time.monotonic()
            self.buf += data
            while b"\n" in self.buf:
                line, self.buf = self.buf.split(b"\n", 1)
                msg = P.parse_line(line + b"\n")
                assert msg is not None, line
                out.append(msg)
                self.last = msg
                if done(msg):
                    return out
        raise AssertionError(f"no end after {len(out)} messages: {out[-3:]}")


def _open(emu):
    ser = serial.Serial(emu.port_path, 115200, timeout=0.05)
    end = time.monotonic() + 30
    while emu.lines_sent < 2 and time.monotonic() < end:     # the boot banner and ready went out ...
        time.sleep(0.01)
    ser.reset_input_buffer()                                 # ... and are dropped: 'info' answers next
    rd = Reader(ser)
    ser.write(P.encode_command("info"))
    banner = rd.until(lambda m: isinstance(m, P.Banner))[-1]
    rd.until(lambda m: isinstance(m, P.Ready))
    return ser, rd, banner


def _live(emu, frames: int):
    """``live`` until a beat at n >= frames, then ``stop``: (stream, events, beats)."""
    ser, rd, banner = _open(emu)
    with ser:
        assert banner.input == "sensor"
        ser.write(P.encode_command("live"))
        rd.until(lambda m: isinstance(m, P.Stream))     # (an answer to 'info' may still come first)
        out = [rd.last] + rd.until(lambda m: isinstance(m, P.Beat) and m.n >= frames)
        ser.write(P.encode_command("stop"))
        out += rd.until(lambda m: isinstance(m, P.Ready))
    assert isinstance(out[0], P.Stream) and not any(isinstance(m, P.Error) for m in out)
    return out[0], [m for m in out if isinstance(m, P.Event)], [m for m in out if isinstance(m, P.Beat)]


def _twin(run, device, track, stream, n, present=None):
    model = L.LiveModel.from_run(run, device)
    counts = np.resize(track.counts, (n, track.counts.shape[1]))       # the emulator loops its track
    d = L.live_decisions(counts, model, stream.hop, present)
    return model, d, L.events(d), L.beats(d, n, stream.rate_hz, present)


def _same_events(got, want, model):
    assert [(e.n, e.pred) for e in got[:len(want)]] == [(e.n, e.pred) for e in want]
    assert [P._fixed6(e.score) for e in got[:len(want)]] == [P._fixed6(e.score) for e in want]
    assert all(P._fixed6(e.threshold) == P._fixed6(model.threshold) for e in got)


def test_live_events_equal_the_twin_and_a_fault_raises_its_event_within_a_hop(small_run):
    track = S.track_for_run(small_run, 0, segments=FAULT, seed=1)
    with Emulator(small_run, 0, sensor=track, speed=None) as emu:
        stream, events, beats = _live(emu, 2 * len(track))
        assert emu.sensor.dropped == 0                       # free-running: nothing is lost
    f = track.facts
    assert (stream.rate_hz, stream.channels, stream.window, stream.hop, stream.source) == (2000, 6, 40, 20, "sim")
    assert stream.unit == "mixed" and abs(stream.scale - 1000 / 32767) < 1e-6   # A and pu channels
    n = beats[-1].n
    model, d, ev, bt = _twin(small_run, 0, track, stream, n)
    _same_events(events, ev, model)
    assert [(b.n, b.pred, b.dropped) for b in beats] == [(b.n, b.pred, b.dropped) for b in bt]
    # the last window of the normal stretch decides normal; the fault (frames 1000..1499) raises its
    # event by the first window wholly inside it + one hop
    assert next(x for x in d if x.n == 1000).pred == 0
    first = next(e for e in events if e.n > 1000)
    assert first.pred == f.class_names.index("LLL") and first.n - 1000 <= stream.window + stream.hop


def test_live_with_lost_frames_skips_their_windows_as_the_twin(small_run):
    """A device that stalls (the emulator's --stall) in real time loses frames: beats count them, and
    the events are the twin's on the same holes."""
    track = S.track_for_run(small_run, 0, segments=FAULT, seed=1)
    with Emulator(small_run, 0, sensor=track, speed=2.0, stall=0.3, stall_after=4) as emu:
        stream, events, beats = _live(emu, 3 * 2000)
        n = beats[-1].n
        present = emu.sensor.present(n)
    assert not present.all() and beats[-1].dropped == int((~present).sum())
    model, d, ev, bt = _twin(small_run, 0, track, stream, n, present)
    _same_events(events, ev, model)
    assert [(b.n, b.pred, b.dropped) for b in beats] == [(b.n, b.pred, b.dropped) for b in bt]


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    from livefixture import electrical_toy_run

    return electrical_toy_run(tmp_path_factory)


def _capture(emu, count: int, stall_until=None):
    ser, rd, _ = _open(emu)
    with ser:
        ser.write(P.encode_command("capture", count))
        out = rd.until(lambda m: isinstance(m, P.Stream))
        if stall_until is not None:                # the host stops reading until frames are lost
            end = time.monotonic() + 30
            while not stall_until() and time.monotonic() < end:
                time.sleep(0.02)
            ser.write(P.encode_command("stop"))
        out += rd.until(lambda m: isinstance(m, P.Ready))
    return out


def _coverage(out, track):
    """(frames received by index, gaps); asserts every index is in exactly one frames or gap line
    and every frame equals the track's."""
    end = next(m for m in out if isinstance(m, P.CaptureEnd))
    total = end.sent + end.dropped
    seen = np.zeros(total, int)
    c = track.counts.shape[1]
    for m in out:
        if isinstance(m, P.Frames):
            got = np.asarray(m.data, np.int16).reshape(m.count, c)
            want = np.resize(track.counts, (m.index + m.count, c))[m.index:]
            assert np.array_equal(got, want), m.index
            seen[m.index:m.index + m.count] += 1
        elif isinstance(m, P.Gap):
            seen[m.index:m.index + m.count] += 1
    assert (seen == 1).all()
    return end, [(m.index, m.count) for m in out if isinstance(m, P.Gap)]


def test_capture_reproduces_the_played_samples_exactly(toy):
    track = S.track_for_run(toy, 3, segments="no_fault:0.3,LG:0.2", seed=2)
    with Emulator(toy, 3, sensor=track, speed=None) as emu:
        out = _capture(emu, 1500)                            # more than the track: it loops
    end, gaps = _coverage(out, track)
    assert (end.sent, end.dropped, gaps) == (1500, 0, [])
    frames = [m for m in out if isinstance(m, P.Frames)]
    assert max(m.count for m in frames) == P.frames_per_line(6)


def test_capture_counts_lost_frames_when_the_host_stops_reading(toy):
    track = S.track_for_run(toy, 3, segments="no_fault:0.3,LG:0.2", seed=2)
    with Emulator(toy, 3, sensor=track, speed=1.0) as emu:
        out = _capture(emu, 0, stall_until=lambda: emu.sensor.dropped > 0)
    end, gaps = _coverage(out, track)
    assert end.dropped > 0 and sum(c for _, c in gaps) == end.dropped


def test_live_and_capture_need_a_sensor_and_stop_alone_is_ready(toy):
    with Emulator(toy, 3) as emu:
        ser, rd, banner = _open(emu)
        with ser:
            assert banner.input == "windows"
            for cmd in (P.encode_command("live"), P.encode_command("capture", 5)):
                ser.write(cmd)
                out = rd.until(lambda m: isinstance(m, P.Ready))
                assert isinstance(out[0], P.Error) and out[0].code == "no_sensor"
            ser.write(P.encode_command("stop"))
            assert rd.until(lambda m: isinstance(m, P.Ready)) == [P.Ready()]


def test_emulate_refuses_bad_sensor_options(toy):
    from click.testing import CliRunner

    from fedtiny.bench.cli import emulate

    for args, msg in [(["--sensor", "builtin", "--segments", "LG:-1"], "positive"),
                      (["--sensor", "builtin", "--segments", "pump:1"], "CLASS:SECONDS"),
                      (["--sensor", str(toy / "nope.csv")], "does not exist"),
                      (["--segments", "LG:1"], "need --sensor")]:
        r = CliRunner().invoke(emulate, ["--run", str(toy), "--device", "3"] + args, catch_exceptions=False)
        assert r.exit_code == 2 and r.output.count("error:") == 1 and msg in r.output, (args, r.output)
