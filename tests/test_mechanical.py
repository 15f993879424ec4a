"""Bearing physics, the built-in mechanical fleet and the CWRU .mat loader (NumPy/SciPy only)."""
from __future__ import annotations

import json

import numpy as np
import pytest
from scipy.io import savemat

from fedtiny.trainer.data import mechanical as m
from fedtiny.trainer.data.cwru import load_cwru
from fedtiny.trainer.data.fleet import DataError

FS = 12000.0


# ---------------------------------------------------------------- defect frequencies

def test_cwru_de_multipliers_match_data_md():
    mult = m.defect_multipliers(m.CWRU_DE)
    want = {"FTF": 0.39831, "BPFO": 3.58478, "BPFI": 5.41522, "BSF": 2.35672, "2xBSF": 4.71344}
    for k, v in want.items():
        assert mult[k] == pytest.approx(v, abs=1e-5), k
    # CWRU's published multipliers (rolling element = 2 x BSF)
    assert mult["BPFI"] == pytest.approx(5.4152, abs=1e-4)
    assert mult["2xBSF"] == pytest.approx(4.7135, abs=1e-4)


@pytest.mark.parametrize("rpm,row", [
    (1797, (29.95, 11.93, 107.36, 162.19, 70.58, 141.17)),
    (1730, (28.83, 11.48, 103.36, 156.14, 67.95, 135.90)),
])
def test_defect_frequency_table_rows(rpm, row):
    f = m.defect_frequencies(rpm)
    got = (f["f_r"], f["FTF"], f["BPFO"], f["BPFI"], f["BSF"], f["2xBSF"])
    np.testing.assert_allclose(got, row, atol=0.006)


def test_pure_functions_agree_with_each_other():
    g = (9, 0.3126, 1.537, 0.0)
    f_r = np.array([10.0, 29.95])
    np.testing.assert_allclose(m.bpfo(f_r, *g) + m.bpfi(f_r, *g), 9 * f_r)     # BPFO + BPFI = n f_r
    np.testing.assert_allclose(m.ball_pass(f_r, *g), 2 * m.bsf(f_r, *g))
    np.testing.assert_allclose(m.bpfo(f_r, *g), 9 * m.ftf(f_r, *g))            # BPFO = n FTF
    assert m.rpm_at_load(2.0) == 1750.0 and m.rpm_at_load(1.5) == pytest.approx(1761.0)


# ---------------------------------------------------------------- signal model

FAULT_LINE = {"outer_race": "BPFO", "inner_race": "BPFI", "ball": "2xBSF"}


def _line(f, spec, freq, half_width=0.6):
    sel = np.abs(f - freq) <= half_width
    return spec[sel].max()


@pytest.mark.parametrize("cls", ["outer_race", "inner_race", "ball"])
def test_envelope_spectrum_peaks_at_the_fault_rate(cls):
    rng = np.random.default_rng(11)
    rpm = 1772.0
    x = m.bearing_signal(cls, 1, rng, rpm=rpm, fault_rms=m.NOMINAL_FAULT_RMS[cls], n_samples=4 * 12000)[0]
    f, spec = m.envelope_spectrum(x, FS, (2000.0, 4500.0))
    fd = m.defect_frequencies(rpm)
    # strongest envelope line between 50 Hz and just below 2 x BPFO is the fault rate
    sel = (f > 50) & (f < 190)
    peak = f[sel][np.argmax(spec[sel])]
    assert peak == pytest.approx(fd[FAULT_LINE[cls]], abs=0.5)
    noise_floor = np.median(spec[(f > 20) & (f < 500)])
    assert _line(f, spec, fd[FAULT_LINE[cls]]) > 20 * noise_floor
    # the other two defect lines are absent
    for other in set(FAULT_LINE.values()) - {FAULT_LINE[cls]}:
        assert _line(f, spec, fd[other]) < 0.2 * _line(f, spec, fd[FAULT_LINE[cls]])


def test_envelope_peaks_on_1024_sample_windows():
    """Averaged over many short windows, the 11.7 Hz-resolution envelope spectrum still peaks at BPFI."""
    rng = np.random.default_rng(5)
    x = m.bearing_signal("inner_race", 64, rng, rpm=1797.0, fault_rms=0.32)
    f, spec = m.envelope_spectrum(x, FS)
    spec = spec.mean(axis=0)
    sel = (f > 50) & (f < 300)
    assert f[sel][np.argmax(spec[sel])] == pytest.approx(162.19, abs=f[1])


def test_healthy_envelope_has_no_defect_lines():
    rng = np.random.default_rng(12)
    x = m.bearing_signal("normal", 1, rng, rpm=1797.0, n_samples=4 * 12000)[0]
    f, spec = m.envelope_spectrum(x, FS)
    floor = np.median(spec[(f > 20) & (f < 500)])
    fd = m.defect_frequencies(1797.0)
    for key in ("BPFO", "BPFI", "2xBSF"):
        assert _line(f, spec, fd[key]) < 6 * floor, key


# rms and kurtosis ranges: the brief's targets (DATA.md "Scale A0 so that ...") for the median window and
# DATA.md's measured CWRU ranges for 90 % of the windows
TARGET = {"normal": ((0.05, 0.09), (2.8, 3.2)), "inner_race": ((0.2, 0.5), (5, 20)),
          "outer_race": ((0.3, 0.7), (7, 24)), "ball": ((0.1, 0.15), (3, 15))}
MEASURED = {"normal": ((0.05, 0.09), (2.5, 3.5)), "inner_race": ((0.16, 0.53), (5, 22)),
            "outer_race": ((0.3, 0.7), (7, 24)), "ball": ((0.1, 0.15), (3, 15))}


@pytest.mark.parametrize("fn,zeta,noise", [(3200.0, 0.05, 0.07), (3000.0, 0.035, 0.085), (3600.0, 0.055, 0.055)])
def test_rms_and_kurtosis_in_cwru_ranges(fn, zeta, noise):
    """At the nominal fault level, at the corners of the devices' resonance/damping/noise ranges, the
    median window meets the target rms and kurtosis and 90 % of windows lie in the measured ranges."""
    rng = np.random.default_rng(7)
    for cls in m.CLASS_NAMES:
        x = m.bearing_signal(cls, 120, rng, resonance_hz=fn, damping=zeta, noise_rms=noise,
                             fault_rms=m.NOMINAL_FAULT_RMS.get(cls, 0.0))
        r, k = m.rms(x), m.kurtosis(x)
        (r_lo, r_hi), (k_lo, k_hi) = TARGET[cls]
        assert r_lo <= np.median(r) <= r_hi and k_lo <= np.median(k) <= k_hi, (cls, np.median(r), np.median(k))
        (r_lo, r_hi), (k_lo, k_hi) = MEASURED[cls]
        assert np.mean((r >= r_lo) & (r <= r_hi)) >= 0.9, (cls, np.percentile(r, [5, 50, 95]))
        assert np.mean((k >= k_lo) & (k <= k_hi)) >= 0.9, (cls, np.percentile(k, [5, 50, 95]))
    healthy = m.bearing_signal("normal", 200, rng, resonance_hz=fn, damping=zeta, noise_rms=noise)
    assert np.median(m.kurtosis(healthy)) == pytest.approx(3.0, abs=0.15)
    faulty = m.bearing_signal("ball", 200, rng, resonance_hz=fn, damping=zeta, noise_rms=noise, fault_rms=0.09)
    assert np.median(m.kurtosis(faulty)) > 4.0          # even the weak ball fault is impulsive


def test_impact_level_formula_sets_the_rms():
    rng = np.random.default_rng(3)
    for target in (0.05, 0.2, 0.6):
        x = m.bearing_signal("outer_race", 200, rng, fault_rms=target, noise_rms=0.0, shaft_g=(), line_g=0.0)
        assert np.mean(m.rms(x)) == pytest.approx(target, rel=0.05)


def test_sensor_gain_scales_the_window():
    a = m.bearing_signal("ball", 4, np.random.default_rng(1), gain=1.0)
    b = m.bearing_signal("ball", 4, np.random.default_rng(1), gain=1.7)
    np.testing.assert_allclose(b, 1.7 * a)


# ---------------------------------------------------------------- generator

@pytest.fixture(scope="module")
def fleet():
    return m.generate(n_devices=10, alpha=0.5, seed=0, samples_per_device=400, public_samples=1200)


def test_generate_shapes_dtypes_and_metadata(fleet):
    assert fleet.name == "mechanical" and fleet.class_names == m.CLASS_NAMES
    assert fleet.channel_names == ["DE_accel_g"] and fleet.sample_rate_hz == 12000.0
    assert fleet.channel_scale.dtype == np.float32 and fleet.channel_scale.shape == (1,)
    assert fleet.input_shape == (1024, 1) and fleet.n_classes == 4
    assert len(fleet.devices) == 10 and len(fleet.public) == 1200
    all_groups = [fleet.public.groups] + [d.groups for d in fleet.devices]
    for p in [fleet.public, *fleet.devices]:
        assert p.x.dtype == np.float32 and p.y.dtype == np.int64 and p.x.shape[1:] == (1024, 1)
        assert np.all(np.isfinite(p.x))
    for d in fleet.devices:
        assert len(d) == 400
        assert set(np.unique(d.y)) == {0, 1, 2, 3}          # every class present on every device
    g = np.concatenate(all_groups)
    assert len(np.unique(g)) == len(g)                     # independent windows: one group each
    json.dumps([d.condition for d in fleet.devices] + [fleet.public.condition, fleet.info])
    # label skew: class proportions differ between devices
    counts = np.array([np.bincount(d.y, minlength=4) for d in fleet.devices])
    assert counts.max() > 150 and counts.min() <= 10
    # public pool is class-balanced
    assert np.all(np.bincount(fleet.public.y, minlength=4) == 300)


def test_channel_scale_covers_the_signals(fleet):
    x = np.concatenate([fleet.public.x] + [d.x for d in fleet.devices]) / fleet.channel_scale
    assert np.mean(np.abs(x) <= 1.0) > 0.99
    healthy = np.concatenate([d.x[d.y == 0] for d in fleet.devices]) / fleet.channel_scale
    assert np.abs(healthy).max() <= 1.0 and healthy.std() > 0.01   # healthy noise spans several INT8 steps


def test_device_conditions_differ_and_public_is_outside(fleet):
    conds = [d.condition for d in fleet.devices]
    for key in ("rpm", "resonance_hz", "damping", "noise_rms_g", "sensor_gain"):
        vals = [c[key] for c in conds]
        assert len(set(vals)) == len(vals), key
    rpms = [c["rpm"] for c in conds]
    assert min(rpms) == pytest.approx(1730.0) and max(rpms) == pytest.approx(1797.0)
    fn = [c["resonance_hz"] for c in conds]
    pub = fleet.public.condition["conditions"]
    assert len(pub) >= 2
    for c in pub:
        assert not (min(rpms) <= c["rpm"] <= max(rpms))
        assert not (min(fn) <= c["resonance_hz"] <= max(fn))
    assert {c["fault_size_in"] for c in conds} >= {0.007, 0.021}
    # level alone cannot separate the devices' healthy windows from faults: gains spread the levels
    gains = [c["sensor_gain"] for c in conds]
    assert max(gains) / min(gains) > 2.0


def test_generate_is_deterministic():
    kw = dict(n_devices=3, alpha=0.5, samples_per_device=40, public_samples=40)
    a, b, c = m.generate(seed=4, **kw), m.generate(seed=4, **kw), m.generate(seed=5, **kw)
    for pa, pb in zip([a.public, *a.devices], [b.public, *b.devices]):
        np.testing.assert_array_equal(pa.x, pb.x)
        np.testing.assert_array_equal(pa.y, pb.y)
        assert pa.condition == pb.condition
    assert not np.array_equal(a.devices[0].x, c.devices[0].x)
    assert a.devices[1].condition != c.devices[1].condition


def test_four_devices_get_the_four_cwru_loads():
    f = m.generate(n_devices=4, samples_per_device=20, public_samples=8, seed=1)
    assert [d.condition["rpm"] for d in f.devices] == [1797.0, 1772.0, 1750.0, 1730.0]


def test_generate_rejects_bad_arguments():
    with pytest.raises(DataError, match="alpha"):
        m.generate(n_devices=2, alpha=0.0, samples_per_device=40, public_samples=8)
    with pytest.raises(DataError, match="per class"):
        m.generate(n_devices=2, samples_per_device=10, public_samples=8)


# ---------------------------------------------------------------- CWRU loader

LABEL = {97: 0, 98: 0, 99: 0, 100: 0, 105: 1, 106: 1, 107: 1, 130: 2, 131: 2, 132: 2, 118: 3, 119: 3, 120: 3}
RPM = {0: 1797, 1: 1772, 2: 1750, 3: 1730}
N12 = 5 * 1024 + 300            # 5 windows at 12 kHz
N48 = 4 * (6 * 1024) + 500      # 6 windows after decimation by 4


def _healthy_48k(rng, n=N48):
    t = np.arange(n) / 48000.0
    # 1 kHz tone must survive; 20 kHz tone must be removed (it would alias to 4 kHz at 12 kHz)
    return 0.07 * rng.standard_normal(n) + 0.2 * np.sin(2 * np.pi * 1000 * t) + 0.2 * np.sin(2 * np.pi * 20000 * t)


def _write_folder(path, numbers=tuple(LABEL), seed=0):
    rng = np.random.default_rng(seed)
    names = {1: "inner_race", 2: "outer_race", 3: "ball"}
    for num in numbers:
        load = (num - 97) % 4 if LABEL[num] == 0 else (num % 4)
        d = {f"X{num:03d}RPM": np.array([[RPM[load]]], float)}
        if LABEL[num] == 0:
            d[f"X{num:03d}_DE_time"] = _healthy_48k(rng)[:, None]
            d[f"X{num:03d}_FE_time"] = 0.05 * rng.standard_normal((N48, 1))
        else:
            d[f"X{num:03d}_DE_time"] = m.bearing_signal(names[LABEL[num]], 1, rng, n_samples=N12,
                                                        fault_rms=0.3)[0][:, None]
            d[f"X{num:03d}_FE_time"] = 0.05 * rng.standard_normal((N12, 1))
        if num == 99:           # 99.mat also carries record 98's variables: must be ignored
            d["X098_DE_time"] = np.full((N48 * 2, 1), 7.0)
            d["X098RPM"] = np.array([[1772.0]])
        savemat(path / f"{num}.mat", d)
    return path


@pytest.fixture(scope="module")
def cwru_dir(tmp_path_factory):
    return _write_folder(tmp_path_factory.mktemp("cwru"))


def _all_pools(f):
    return [f.public, *f.devices]


def test_cwru_loads_labels_groups_and_variables(cwru_dir):
    f = load_cwru(cwru_dir, n_devices=2, alpha=1.0, seed=0, group_by="recording", cache=False)
    assert f.class_names == m.CLASS_NAMES and f.input_shape == (1024, 1) and f.sample_rate_hz == 12000.0
    pools = _all_pools(f)
    seen = np.concatenate([p.groups for p in pools])
    assert set(np.unique(seen)) == set(LABEL)
    # a recording lives in exactly one pool (public or one device)
    owners = [set(np.unique(p.groups).tolist()) for p in pools]
    for i in range(len(owners)):
        for j in range(i + 1, len(owners)):
            assert not owners[i] & owners[j]
    for p in pools:
        for g, y in zip(p.groups, p.y):
            assert LABEL[int(g)] == y
        assert p.x.dtype == np.float32 and p.x.shape[1:] == (1024, 1)
    # window counts: 5 per 12 kHz record, 6 per decimated 48 kHz record
    for p in pools:
        for g in np.unique(p.groups):
            assert np.sum(p.groups == g) == (6 if LABEL[int(g)] == 0 else 5)
    # one public recording per class, devices hold >= 2 recordings of >= 2 classes
    assert sorted(LABEL[int(g)] for g in np.unique(f.public.groups)) == [0, 1, 2, 3]
    for d in f.devices:
        assert len(np.unique(d.groups)) >= 2 and len(np.unique(d.y)) >= 2
    # 99.mat: its own variable and rpm were used, not record 98's
    recs = [r for p in pools for r in p.condition["recordings"]]
    r99 = next(r for r in recs if r["file"] == "99.mat")
    assert r99["variable"] == "X099_DE_time" and r99["rpm"] == 1750.0
    x99 = np.concatenate([p.x[p.groups == 99] for p in pools])
    assert np.abs(x99).max() < 2.0
    for d in f.devices:
        assert d.condition["rpm"] is not None and set(d.condition["rpm_values"]) <= set(map(float, RPM.values()))
    json.dumps([p.condition for p in pools] + [f.info])
    g = load_cwru(cwru_dir, n_devices=2, alpha=1.0, seed=0, group_by="recording", cache=False)
    for a, b in zip(pools, _all_pools(g)):
        np.testing.assert_array_equal(a.groups, b.groups)


def test_cwru_48k_records_are_decimated_with_anti_alias(cwru_dir):
    f = load_cwru(cwru_dir, n_devices=2, alpha=1.0, seed=0, group_by="recording", cache=False)
    x = np.concatenate([p.x[p.y == 0, :, 0] for p in _all_pools(f)])
    assert len(x) == 4 * 6
    spec = np.abs(np.fft.rfft(x, axis=1)).mean(axis=0)
    freqs = np.fft.rfftfreq(1024, 1 / 12000.0)
    tone = spec[np.argmin(np.abs(freqs - 1000))]
    alias = spec[np.argmin(np.abs(freqs - 4000))]
    floor = np.median(spec)
    assert tone > 20 * floor               # the 1 kHz tone keeps its level (0.2 g)
    assert alias < 3 * floor               # the 20 kHz tone did not fold down to 4 kHz
    amp = 2 * tone / 1024
    assert amp == pytest.approx(0.2, rel=0.25)


def _subset(tmp_path, numbers):
    return _write_folder(tmp_path, numbers)


def test_cwru_unreadable_file(tmp_path):
    _subset(tmp_path, (105, 130))
    (tmp_path / "121.mat").write_bytes(b"this is not a MATLAB file at all" * 10)
    with pytest.raises(DataError, match=r"121\.mat.*cannot read"):
        load_cwru(tmp_path, n_devices=1)


def test_cwru_missing_de_variable(tmp_path):
    _subset(tmp_path, (105, 130))
    savemat(tmp_path / "108.mat", {"X108_FE_time": np.zeros((N12, 1)), "X107_DE_time": np.zeros((N12, 1))})
    with pytest.raises(DataError, match=r"108\.mat.*X108_DE_time"):
        load_cwru(tmp_path, n_devices=1)


def test_cwru_unknown_label_and_labels_csv(tmp_path):
    _subset(tmp_path, tuple(LABEL))
    rng = np.random.default_rng(3)
    sig = m.bearing_signal("ball", 1, rng, n_samples=N12, fault_rms=0.3)[0]
    savemat(tmp_path / "555.mat", {"X555_DE_time": sig[:, None]})
    f = load_cwru(tmp_path, n_devices=2, alpha=1.0, cache=False)      # unknown number: skipped, said why
    assert "555.mat" in f.info["skipped"] and "labels.csv" in f.info["skipped"]
    assert 555 not in {int(v) for p in _all_pools(f) for v in p.spans[:, 0]}
    (tmp_path / "labels.csv").write_text("file,label\n555.mat,ball\n")
    f = load_cwru(tmp_path, n_devices=2, alpha=1.0, group_by="recording")
    ys = {int(g): int(y) for p in _all_pools(f) for g, y in zip(p.groups, p.y)}
    assert ys[555] == 3
    # labels.csv also overrides the table, and a bad label is refused naming the file
    (tmp_path / "labels.csv").write_text("file,label\n555.mat,ball\n105.mat,outer_race\n")
    f = load_cwru(tmp_path, n_devices=2, alpha=1.0, group_by="recording")
    ys = {int(g): int(y) for p in _all_pools(f) for g, y in zip(p.groups, p.y)}
    assert ys[105] == 2
    (tmp_path / "labels.csv").write_text("file,label\n555.mat,cracked_cage\n")
    with pytest.raises(DataError, match=r"555\.mat.*unknown label 'cracked_cage'"):
        load_cwru(tmp_path, n_devices=2, alpha=1.0)


def test_cwru_too_few_recordings_for_devices(cwru_dir):
    with pytest.raises(DataError, match=r"13 recordings.*for 5 devices"):
        load_cwru(cwru_dir, n_devices=5, alpha=1.0, group_by="recording", cache=False)


def test_cwru_device_left_with_a_single_class(tmp_path):
    # 4 normal + 2 inner race: after one public recording of each, the devices share 3 normal + 1
    # inner-race recording, so one of two devices always ends up with a single class
    _subset(tmp_path, (97, 98, 99, 100, 105, 106))
    with pytest.raises(DataError, match=r"device \d would get .*1 class.*2 devices"):
        load_cwru(tmp_path, n_devices=2, alpha=1.0, group_by="recording", cache=False)
