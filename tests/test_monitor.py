"""fedtiny monitor against the emulator's simulated sensor: JSON lines, stop at the end, Ctrl-C."""
from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from fedtiny import live as L
from fedtiny.bench import Emulator
from fedtiny.bench import livehost
from fedtiny.bench.cli import monitor
from fedtiny.firmware import protocol as P
from fedtiny.firmware import simsensor as S


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    from livefixture import electrical_toy_run

    return electrical_toy_run(tmp_path_factory)


def _lines(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_monitor_writes_the_twins_events_and_beats_and_stops(toy, tmp_path):
    track = S.track_for_run(toy, 3, segments="no_fault:0.5,LLL:0.5", seed=3)
    out = tmp_path / "live.jsonl"
    with Emulator(toy, 3, sensor=track, speed=None) as emu:
        r = CliRunner().invoke(monitor, ["--port", emu.port_path, "--seconds", "1.5", "--out", str(out),
                                         "--run", str(toy), "--device", "3"], catch_exceptions=False)
        assert r.exit_code == 0, r.output
        assert list(emu.commands)[-2:] == ["live", "stop"]
    recs = _lines(out)
    assert recs[0]["type"] == "stream" and recs[0]["clock"] == "host" and recs[0]["rate_hz"] == 2000
    events = [x for x in recs if x["type"] == "event"]
    beats = [x for x in recs if x["type"] == "beat"]
    assert beats and all(b["dropped"] == 0 for b in beats)
    n = max(x["n"] for x in recs[1:])
    d = L.live_decisions(np.resize(track.counts, (n, 6)), L.LiveModel.from_run(toy, 3), recs[0]["hop"])
    assert [(e["n"], e["pred"]) for e in events] == [(e.n, e.pred) for e in L.events(d)]
    names = ["no_fault", "LG", "LL", "LLG", "LLL", "LLLG"]
    assert all(x["class"] == (names[x["pred"]] if x["pred"] >= 0 else "-") for x in events + beats)
    assert [b["n"] for b in beats] == list(range(2000, n + 1, 2000))
    assert f"wrote {out}" in r.output and "events" in r.output


def test_ctrl_c_stops_the_board_and_leaves_whole_lines(toy, tmp_path, monkeypatch):
    track = S.track_for_run(toy, 3, segments="no_fault:1", seed=3)
    out = tmp_path / "live.jsonl"
    real = livehost.MonitorState.add

    def add(self, msg):                       # Ctrl-C arrives after the third beat
        real(self, msg)
        if self.beats == 3:
            raise KeyboardInterrupt

    monkeypatch.setattr(livehost.MonitorState, "add", add)
    with Emulator(toy, 3, sensor=track, speed=None) as emu:
        r = CliRunner().invoke(monitor, ["--port", emu.port_path, "--out", str(out)], catch_exceptions=False)
        assert r.exit_code == 130 and "error: interrupted" in r.output and "Traceback" not in r.output
        assert list(emu.commands)[-2:] == ["live", "stop"]
        # the board is back in command mode
        monkeypatch.setattr(livehost.MonitorState, "add", real)
        with livehost.LiveSession(emu.port_path, timeout=5) as ls:
            assert ls.banner.input == "sensor"
    recs = _lines(out)                        # whole lines up to the beat the Ctrl-C interrupted
    assert [x["n"] for x in recs if x["type"] == "beat"] == [2000, 4000]


def test_monitor_errors(toy, tmp_path):
    with Emulator(toy, 3) as emu:
        r = CliRunner().invoke(monitor, ["--port", emu.port_path, "--seconds", "1"], catch_exceptions=False)
    assert r.exit_code == 2 and r.output.count("error:") == 1 and "--input sensor" in r.output
    r = CliRunner().invoke(monitor, ["--port", str(tmp_path / "nope"), "--seconds", "1"], catch_exceptions=False)
    assert r.exit_code == 2 and r.output.count("error:") == 1
