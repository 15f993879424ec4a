"""fedtiny capture against the emulator's simulated sensor: the fleet folder it writes, gaps, bad input."""
from __future__ import annotations

import errno
import os

import numpy as np
import pytest
from click.testing import CliRunner

from fedtiny.bench import Emulator
from fedtiny.bench.cli import capture
from fedtiny.firmware import simsensor as S
from fedtiny.trainer.data import fleetdir as FD


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    from livefixture import electrical_toy_run

    return electrical_toy_run(tmp_path_factory)


def _cli(args):
    return CliRunner().invoke(capture, [str(a) for a in args], catch_exceptions=False)


def _counts(path, full_scale):
    rec = FD.read_csv(path, 2000.0)
    return rec.channels, S.to_counts(rec.x, full_scale)


def _tree(root):
    return sorted((str(p.relative_to(root)), p.read_bytes()) for p in root.rglob("*") if p.is_file()) \
        if root.exists() else []


def test_two_captures_make_a_device_folder_the_fleet_reader_and_data_check_accept(toy, tmp_path):
    from fedtiny.data_cli import data

    fleet = tmp_path / "F"
    tracks = {}
    for label, segs in (("no_fault", "no_fault:1"), ("LG", "LG:1")):
        tracks[label] = S.track_for_run(toy, 3, segments=segs, seed=2)
        with Emulator(toy, 3, sensor=tracks[label], speed=None) as emu:
            r = _cli(["--port", emu.port_path, "--label", label, "--seconds", 1.5, "--out", fleet / "dev-a",
                      "--run", toy, "--device", 3])
        assert r.exit_code == 0, r.output
        assert "3000 of 3000 frames at 2000 Hz" in r.output and "gap" not in r.output
    spec = FD.read_spec(fleet)
    assert (spec.rate_hz, spec.channels, spec.normal) == (2000.0, ("Ia", "Ib", "Ic", "Va", "Vb", "Vc"), "no_fault")
    assert spec.units == {"Ia": "A", "Ib": "A", "Ic": "A", "Va": "pu", "Vb": "pu", "Vc": "pu"}
    segs = FD.read_labels(fleet / "dev-a")
    assert [s.label for s in segs] == ["no_fault", "LG"] and all(s.start_s is None for s in segs)
    facts = S.run_facts(toy, 3)
    for s in segs:                                   # the played samples, exactly (the track loops)
        chans, counts = _counts(fleet / "dev-a" / s.file, facts.full_scale)
        assert chans == list(facts.channels)
        assert np.array_equal(counts, np.resize(tracks[s.label].counts, (3000, 6)))
    # the fleet reader cuts both classes' windows out of the device folder (what train --fleet reads)
    f = FD.run_fields("electrical", fleet)
    geo = FD.Geometry.from_ms(f["rate_hz"], f["window_ms"], f["hop_ms"], f["block_ms"], f["guard_ms"])
    pool = FD.read_device(fleet / "dev-a", spec, geo, list(f["channels"]), list(f["class_names"]), cache=False).pool
    assert set(pool.y.tolist()) == {0, 1} and pool.x.shape[1:] == (200, 6)
    r = CliRunner().invoke(data, ["check", str(fleet)], catch_exceptions=False)
    assert r.exit_code == 0 and "warning" not in r.output, r.output
    assert "dev-a: no_fault 1.5 s" in r.output and "LG 1.5 s" in r.output


def test_lost_frames_split_the_recording_or_refuse_it(toy, tmp_path):
    """A device that stalls in real time loses frames: the capture reports the gap and writes each
    stretch around it as its own recording (--gaps split), or nothing (--gaps refuse)."""
    track = S.track_for_run(toy, 3, segments="no_fault:1", seed=2)
    fleet = tmp_path / "F"
    with Emulator(toy, 3, sensor=track, speed=1.0, stall=0.3, stall_after=5) as emu:
        r = _cli(["--port", emu.port_path, "--label", "no_fault", "--seconds", 0.8, "--out", fleet / "d",
                  "--run", toy, "--device", 3, "--gaps", "refuse"])
    assert r.exit_code == 2 and r.output.count("error:") == 1 and "nothing written" in r.output
    assert not fleet.exists()
    with Emulator(toy, 3, sensor=track, speed=1.0, stall=0.3, stall_after=5) as emu:
        r = _cli(["--port", emu.port_path, "--label", "no_fault", "--seconds", 0.8, "--out", fleet / "d",
                  "--run", toy, "--device", 3])
        lost = list(emu.sensor.lost)
    assert r.exit_code == 0, r.output
    assert lost and "lost by the device" in r.output and "split at its gaps" in r.output
    files = [s.file for s in FD.read_labels(fleet / "d")]
    assert len(files) >= 2 and all(f.endswith(f"-p{i + 1}.csv") for i, f in enumerate(files))
    present = np.ones(1600, bool)
    for a, c in lost:
        present[a:a + c] = False
    got = np.concatenate([_counts(fleet / "d" / f, S.run_facts(toy, 3).full_scale)[1] for f in files])
    assert np.array_equal(got, track.counts[:1600][present])     # every kept frame, none invented


def test_bad_input_is_one_error_line_and_nothing_written(toy, tmp_path, monkeypatch):
    track = S.track_for_run(toy, 3, segments="no_fault:1", seed=2)
    fleet = tmp_path / "F"
    (fleet / "old").mkdir(parents=True)
    (fleet / "fleet.toml").write_text('rate_hz = 2000.0\nnormal = "no_fault"\nclasses = ["no_fault", "LG"]\n')
    (fleet / "old" / "labels.csv").write_text("file,label\n")
    before = _tree(fleet)
    cases = [
        (["--label", "LLL"], "not in"),                                    # not the fleet's vocabulary
        (["--label", "no_fault", "--rate", 4000], "not the 4000 Hz"),     # a rate the board cannot give
        (["--label", "no_fault"], "unit=mixed"),                            # channels in A and pu, no --run
        (["--label", "no_fault", "--run", toy], "--device"),
    ]
    with Emulator(toy, 3, sensor=track, speed=None) as emu:
        for extra, msg in cases:
            r = _cli(["--port", emu.port_path, "--seconds", 0.2, "--out", fleet / "d"] + extra)
            assert r.exit_code == 2 and r.output.count("error:") == 1 and msg in r.output, (extra, r.output)
            assert "Traceback" not in r.output
        # a full disk while labels.csv is written: the recording written before it is removed again
        real = os.fsync
        calls = []

        def fsync(fd):
            calls.append(fd)
            if len(calls) == 2:
                raise OSError(errno.ENOSPC, "No space left on device")
            return real(fd)

        monkeypatch.setattr(os, "fsync", fsync)
        r = _cli(["--port", emu.port_path, "--seconds", 0.2, "--out", fleet / "d", "--label", "no_fault",
                  "--run", toy, "--device", 3])
        monkeypatch.setattr(os, "fsync", real)
        assert r.exit_code == 2 and "No space left" in r.output and r.output.count("error:") == 1, r.output
    assert _tree(fleet) == before
    # a board whose firmware has no sensor; a port that vanishes mid-capture
    with Emulator(toy, 3) as emu:
        r = _cli(["--port", emu.port_path, "--seconds", 0.2, "--out", fleet / "d", "--label", "no_fault"])
    assert r.exit_code == 2 and "--input sensor" in r.output
    with Emulator(toy, 3, sensor=track, speed=None, disconnect_after=20) as emu:
        r = _cli(["--port", emu.port_path, "--seconds", 2, "--out", fleet / "d", "--label", "no_fault",
                  "--run", toy, "--device", 3, "--timeout", 2])
    assert r.exit_code == 2 and r.output.count("error:") == 1 and "disconnected" in r.output, r.output
    assert _tree(fleet) == before
