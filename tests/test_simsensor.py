"""The simulated sensor (firmware/simsensor.py) and the host twin of live decisions (fedtiny/live.py)."""
from __future__ import annotations

import numpy as np
import pytest

from fedtiny import frontend as fe
from fedtiny import live as L
from fedtiny.firmware import simsensor as S


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    from livefixture import electrical_toy_run

    return electrical_toy_run(tmp_path_factory)


def test_run_facts_and_builtin_track_are_deterministic(run):
    f = S.run_facts(run, 3)
    assert (f.rate_hz, f.window, f.hop, f.channels) == (2000.0, 40, 20, ("Ia", "Ib", "Ic", "Va", "Vb", "Vc"))
    assert f.units == ("A", "A", "A", "pu", "pu", "pu") and f.full_scale == (1000.0,) * 3 + (1.0,) * 3
    a = S.track_for_run(run, 3, segments="no_fault:0.1,LLL:0.05", seed=4)
    b = S.track_for_run(run, 3, segments="no_fault:0.1,LLL:0.05", seed=4)
    c = S.track_for_run(run, 3, segments="no_fault:0.1,LLL:0.05", seed=5)
    assert a.counts.dtype == np.int16 and a.counts.shape == (300, 6)
    assert np.array_equal(a.counts, b.counts) and not np.array_equal(a.counts, c.counts)
    assert a.labels.tolist() == [0] * 200 + [4] * 100
    # counts are the front end's int16 of x / full scale; x = count * full_scale / 32767
    x = a.physical()
    assert np.array_equal(S.to_counts(x, f.full_scale), a.counts)
    assert np.array_equal(fe.to_int16(x / np.asarray(f.full_scale)), a.counts)
    # healthy currents about 63 A peak, a three-phase fault about 14 times more (DATA.md)
    assert 20 < np.abs(x[:200, :3]).max() < 200 and np.abs(x[220:, :3]).max() > 300
    # the steady state runs on across samples: no jump bigger than a healthy step
    step = np.abs(np.diff(x[:200, 0]))
    assert step.max() < 4 * np.median(step) + 5
    for bad, msg in [("nonsense:1", "CLASS:SECONDS"), ("LG:0", "positive"), ("LG:x", "positive")]:
        with pytest.raises(S.SensorError, match=msg):
            S.track_for_run(run, 3, segments=bad)


def test_recording_track_through_the_fleet_reader(run, tmp_path):
    f = S.run_facts(run, 3)
    dev = tmp_path / "fleet" / "pump-1"
    dev.mkdir(parents=True)
    (tmp_path / "fleet" / "fleet.toml").write_text('rate_hz = 4000.0\n[units]\nIa = "mA"\n')
    t = np.arange(800) / 4000.0
    cols = {"Va": 0.6 * np.sin(2 * np.pi * 50 * t), "Ia": 63000 * np.sin(2 * np.pi * 50 * t),
            "extra": t, "Ib": 0 * t, "Ic": 0 * t, "Vb": 0 * t, "Vc": 0 * t}
    with open(dev / "rec.csv", "w") as fh:
        fh.write(",".join(cols) + "\n")
        np.savetxt(fh, np.stack(list(cols.values()), axis=1), fmt="%.9g", delimiter=",")
    (dev / "labels.csv").write_text("file,label,start_s,end_s\nrec.csv,LG,0.05,0.1\n")
    tr = S.recording_track(dev / "rec.csv", f)
    assert tr.counts.shape == (400, 6)                         # resampled 4 kHz -> 2 kHz
    assert tr.labels.tolist() == [-1] * 100 + [1] * 100 + [-1] * 200
    x = tr.physical()
    assert 55 < np.abs(x[50:350, 0]).max() < 70                # mA brought to the run's A
    assert 0.55 < np.abs(x[50:350, 3]).max() < 0.65 and np.abs(x[:, 1]).max() == 0
    (dev / "labels.csv").write_text("rec.csv,unknown_class\n")
    with pytest.raises(S.SensorError, match="not a class of the run"):
        S.recording_track(dev / "rec.csv", f)
    with pytest.raises(S.SensorError, match="does not exist"):
        S.recording_track(dev / "nope.csv", f)


def test_decision_points_events_and_beats():
    assert L.decision_points(np.ones(100, bool), 40, 20).tolist() == [40, 60, 80, 100]
    present = np.ones(130, bool)
    present[45:47] = False                                     # windows with a hole are skipped
    assert L.decision_points(present, 40, 20).tolist() == [40, 100, 120]
    d = [L.Decision(n, p, 0.0, ()) for n, p in [(40, 0), (60, 0), (80, 2), (100, 2), (120, 0)]]
    assert [(e.n, e.pred) for e in L.events(d)] == [(40, 0), (80, 2), (120, 0)]
    assert L.beats(d, 130, 50, present) == [L.Beat(50, 0, 2), L.Beat(100, 2, 2)]
    assert L.beats(d[2:], 60, 30) == [L.Beat(30, -1, 0), L.Beat(60, -1, 0)]


def test_twin_decides_as_the_host_on_the_embedded_windows(run):
    """Windows played end to end with hop = window: each decision is the run's INT8 decision on that
    window wherever the raw int16 -> int8 step gives the embedded int8 window."""
    with np.load(run / "devices" / "dev03" / "test_split.npz") as z:
        x, x8, pred = z["x"], z["x_int8"], z["pred_int8"]
    m = L.LiveModel.from_run(run, 3)
    s = fe.to_int16(np.clip(x, -1, 1))
    same = np.all(m.model_input(s).reshape(len(s), -1) == x8.reshape(len(x8), -1), axis=1)
    assert same.mean() > 0.5
    d = L.live_decisions(s.reshape(-1, 6), m, hop=40)
    assert [e.n for e in d] == [40 * (i + 1) for i in range(len(s))]
    assert np.array_equal(np.array([e.pred for e in d])[same], pred[same])
    # the score is the one the threshold rule compares: fault iff score >= threshold
    assert all((e.pred != 0) == (e.score >= m.threshold) for e in d)
    with pytest.raises(L.LiveError, match="frames must be"):
        L.live_decisions(np.zeros((10, 3), np.int16), m, 20)


def test_mechanical_builtin_track_is_a_continuous_bearing_signal():
    from fedtiny.trainer.data import mechanical as M

    f = S.StreamFacts(M.SAMPLE_RATE_HZ, tuple(M.CHANNELS), tuple(float(v) for v in M.CHANNEL_SCALE), ("g",),
                      M.WINDOW, M.WINDOW // 2, tuple(M.CLASS_NAMES), "mechanical", 0, 4)
    segs = [(0, 0.25), (M.CLASS_NAMES.index("outer_race"), 0.25)]
    a, b = S.builtin_track(f, segs, seed=1, device=2), S.builtin_track(f, segs, seed=1, device=2)
    assert a.counts.shape == (6000, 1) and np.array_equal(a.counts, b.counts)
    x = a.physical()[:, 0]
    normal, outer = x[:3000], x[3000:]
    # healthy about 0.07 g rms and kurtosis 3; an outer-race fault louder and impulsive (DATA.md)
    assert 0.03 < M.rms(normal) < 0.2 and M.kurtosis(normal) < 4.5
    assert M.rms(outer) > 1.5 * M.rms(normal) and M.kurtosis(outer) > 4.5
