"""The built-in electrical fleet against the measured facts and the network model's validation
table, and the classData.csv loader on small files written in the real format."""
from __future__ import annotations

import numpy as np
import pytest

from fedtiny.trainer.data import electrical as E
from fedtiny.trainer.data.fleet import DataError

# DATA.md, "Validation": the sequence-network model at the nominal network, bolted faults
# (currents in A peak on Ia, Ib, Ic; line-to-line voltages in pu on Vab, Vbc, Vca)
MODEL_TABLE = {
    "NF": ([63, 63, 63], [0.598] * 3),
    "AG": ([893, 65, 63], [0.36, 0.60, 0.34]),
    "ABG": ([886, 905, 65], [0.02, 0.36, 0.34]),
    "BC": ([63, 753, 803], [0.51, 0.02, 0.53]),
    "ABC": ([898, 898, 898], [0.019] * 3),
}


@pytest.mark.parametrize("fault", list(MODEL_TABLE))
def test_nominal_bolted_faults_match_the_model_table(fault):
    ph = E.nominal_phasors(fault)
    i_ref, v_ref = MODEL_TABLE[fault]
    assert ph["I"] == pytest.approx(i_ref, rel=0.03, abs=3)
    assert ph["V"] == pytest.approx(v_ref, abs=0.015)


def test_physical_invariants_of_the_phasors():
    nf = E.nominal_phasors("NF")
    for fault in ("AG", "ABG", "BC", "ABC"):
        assert max(E.nominal_phasors(fault)["I"]) / nf["I"][0] > 10   # fault current ~14x healthy
    # LG on phase a leaves the healthy pair's line voltage Vbc unchanged
    assert E.nominal_phasors("AG")["V"][1] == pytest.approx(nf["V"][1], abs=0.01)
    # a fault resistance pulls the currents back towards load level
    assert max(E.nominal_phasors("AG", z_f=50.0)["I"]) < 0.5 * max(E.nominal_phasors("AG")["I"])
    # sums of the complex phasors: line-to-line voltages always, currents without a ground path
    for kind in range(6):
        ph = E.measured_phasors([kind])
        assert abs(ph["V"][0].sum()) < 1e-9
        if E.CLASS_NAMES[kind] in ("no_fault", "LL", "LLL"):
            assert abs(ph["I"][0].sum()) < 1e-6 * np.abs(ph["I"][0]).max()
        if E.CLASS_NAMES[kind] in ("LG", "LLG"):
            assert abs(ph["I"][0].sum()) > 0.1 * np.abs(ph["I"][0]).max()


@pytest.fixture(scope="module")
def fleet():
    return E.generate(n_devices=4, alpha=0.5, seed=3, samples_per_device=120, public_samples=120)


def test_generated_windows_shapes_and_invariants(fleet):
    assert fleet.class_names == E.CLASS_NAMES and fleet.channel_names == E.CHANNELS
    assert fleet.input_shape == (40, 6) and fleet.sample_rate_hz == 2000.0
    for pool in [fleet.public, *fleet.devices]:
        assert pool.x.dtype == np.float32 and np.isfinite(pool.x).all()
        assert len(np.unique(pool.groups)) == len(pool)            # every window is its own group
    assert sorted(np.unique(fleet.public.y)) == list(range(6))
    groups = np.concatenate([fleet.public.groups, *[d.groups for d in fleet.devices]])
    assert len(np.unique(groups)) == len(groups)                    # unique fleet-wide
    # healthy windows: currents at load level, voltages near the healthy 0.6 pu peak
    healthy = fleet.public.x[fleet.public.y == E.NF]
    assert 30 < np.abs(healthy[..., :3]).max(axis=1).mean() < 150
    assert 0.45 < np.abs(healthy[..., 3:]).max(axis=1).mean() < 0.75
    # nearly all samples lie inside the fixed front-end full scale the model sees (fault peaks on a
    # strong-source device may saturate it, as a real front end would)
    scaled = np.abs(np.concatenate([d.x for d in fleet.devices]) / fleet.channel_scale)
    assert np.mean(scaled <= 1.0) > 0.95


def test_devices_differ_and_generation_is_deterministic(fleet):
    conds = [d.condition for d in fleet.devices]
    assert len({str(c) for c in conds}) == len(conds)
    again = E.generate(n_devices=4, alpha=0.5, seed=3, samples_per_device=120, public_samples=120)
    for a, b in zip(fleet.devices, again.devices):
        assert np.array_equal(a.x, b.x) and np.array_equal(a.y, b.y)
    other = E.generate(n_devices=4, alpha=0.5, seed=4, samples_per_device=120, public_samples=120)
    assert not np.array_equal(fleet.devices[0].x, other.devices[0].x)


def _write_class_csv(path, blocks, rng):
    """classData.csv format: header G,C,B,A,Ia,Ib,Ic,Va,Vb,Vc, CRLF; ``blocks`` = [(code, rows)]."""
    lines = [",".join(E.CSV_COLUMNS)]
    t0 = 0
    for code, rows in blocks:
        t = (t0 + np.arange(rows)) / E.FS_ACQ
        for k in range(rows):
            cur = [100 * np.sin(E.OMEGA * t[k] + j * 2.094) + rng.normal() for j in range(3)]
            vol = [0.6 * np.sin(E.OMEGA * t[k] + j * 2.094) for j in range(3)]
            lines.append(",".join(code) + "," + ",".join(f"{v:.5f}" for v in cur + vol))
        t0 += rows
    path.write_text("\r\n".join(lines) + "\r\n")
    return path


def test_csv_windows_never_straddle_a_label_change(tmp_path):
    rng = np.random.default_rng(0)
    f = _write_class_csv(tmp_path / "c.csv", [("0000", 1000), ("1001", 850), ("0000", 420)], rng)
    x, y = E.read_class_csv(f)
    assert x.shape == (2270, 6) and list(np.unique(y)) == [E.NF, E.LG]
    xw, yw = E.window_rows(x, y)
    # runs of 1000, 850, 420 rows -> 2 + 2 + 1 whole 400-row windows, tails dropped
    assert list(yw) == [E.NF, E.NF, E.LG, E.LG, E.NF]
    assert xw.shape == (5, 40, 6)
    # each window is the block average (by 10) of its own 400 rows
    assert np.allclose(xw[2], x[1000:1400].reshape(40, 10, 6).mean(axis=1))


def test_csv_fleet_deals_whole_blocks_to_devices(tmp_path):
    rng = np.random.default_rng(1)
    codes = ["0000", "1001", "0110", "1011", "0111", "1111"]
    f = _write_class_csv(tmp_path / "c.csv", [(c, 400 * 12) for c in codes], rng)
    fleet = E.load_csv(f, n_devices=2, alpha=5.0, seed=0, cache=False)
    # default: 10 ms windows (200 rows -> 20 samples at 2 kHz) every 0.5 ms inside 12.5 ms blocks
    assert fleet.input_shape == (20, 6) and len(fleet.devices) == 2 and fleet.sample_rate_hz == 2000.0
    pools = [fleet.public, *fleet.devices]
    # 4800 rows per run, blocks of 250 rows every 260 -> 18 whole blocks + a 120-row tail (dropped,
    # shorter than a window); 6 windows per block
    assert sum(len(p) for p in pools) == 6 * 18 * 6
    owner = {}
    for i, p in enumerate(pools):
        for g in np.unique(p.groups):
            assert owner.setdefault(int(g), i) == i                  # each block dealt exactly once
    assert len(owner) == 6 * 18
    assert sorted(np.unique(fleet.public.y)) == list(range(6))     # the public pool has every class
    with pytest.raises(DataError, match="device"):
        E.load_csv(f, n_devices=40, alpha=0.5, seed=0, cache=False)
