"""The fleet folder's recording formats, segments, resampling, class matching, and its bad inputs
(each one DataError naming the problem; the CLI prints it as one error: line with exit code 2)."""
from __future__ import annotations

import json
import shutil
import wave

import numpy as np
import pytest

RATE = 2000.0
WINDOWING = dict(window_ms=20.0, hop_ms=10.0, block_ms=100.0, guard_ms=0.0)


def sine(n: int, rate: float, amp: float, f: float = 50.0) -> np.ndarray:
    t = np.arange(n) / rate
    return amp * np.sin(2 * np.pi * f * t)


def write_wav(path, data: np.ndarray, rate: int) -> None:
    with wave.open(str(path), "wb") as w:
        w.setnchannels(data.shape[1])
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(data.astype("<i2").tobytes())


def make_fleet(root):
    """pump-a: a semicolon CSV with a time column at 4 kHz (normal, then a fault segment) and an int16
    WAV (fault); pump-b: a .npy with a fault episode inside normal running, an Edge Impulse JSON
    (normal) and an unlabelled CSV."""
    root.mkdir()
    (root / "fleet.toml").write_text('rate_hz = 2000\nchannels = ["Ia", "Va"]\nclasses = ["normal", "fault"]\n'
                                     '[full_scale]\nIa = 1000\nVa = 1\n')
    a = root / "pump-a"
    a.mkdir()
    n = 12000                                                     # 3 s at 4 kHz
    t = np.arange(n) / 4000.0
    rows = np.stack([t, sine(n, 4000, 60), sine(n, 4000, 0.6)], axis=1)
    (a / "a.csv").write_text("time;Ia;Va\n" + "\n".join(";".join(repr(float(v)) for v in r) for r in rows) + "\n")
    write_wav(a / "b.wav", np.stack([sine(4000, RATE, 20000), sine(4000, RATE, 3000)], axis=1), 2000)
    (a / "labels.csv").write_text("file,label,start_s,end_s\na.csv,normal,0,1.5\na.csv,fault,1.5,3\nb.wav,fault,,\n")
    b = root / "pump-b"
    b.mkdir()
    np.save(b / "c.npy", np.stack([sine(6000, RATE, 60), sine(6000, RATE, 0.6)], axis=1))
    ei = {"protected": {"ver": "v1", "alg": "none"}, "signature": "0",
          "payload": {"device_name": "pump-b", "device_type": "gateway", "interval_ms": 0.5,
                      "sensors": [{"name": "Va", "units": "pu"}, {"name": "Ia", "units": "A"}],
                      "values": np.stack([sine(2000, RATE, 0.6), sine(2000, RATE, 60)], axis=1).tolist()}}
    (b / "d.json").write_text(json.dumps(ei))
    (b / "e.csv").write_text("Ia,Va\n1,2\n3,4\n")
    (b / "labels.csv").write_text("c.npy,normal,0,1\nc.npy,fault,1,2\nc.npy,normal,2,3\nd.json,normal\n")
    return root


def load(root):
    from fedtiny.trainer.config import TrainConfig
    from fedtiny.trainer.data.fleetdir import load_fleet_dir, run_fields

    cmap = root.parent / "classmap.csv"
    cmap.write_text("from,to\nno_fault,normal\nLG,fault\n")
    cfg = TrainConfig(**run_fields("electrical", root, WINDOWING, class_map=str(cmap), public_samples=60,
                                   cache=False), public="electrical", class_map=str(cmap), public_samples=60)
    return load_fleet_dir(cfg, cache=False)


@pytest.fixture()
def fleet_root(tmp_path):
    return make_fleet(tmp_path / "F")


def test_every_format_segments_and_resampling(fleet_root):
    f = load(fleet_root)
    assert f.info["device_names"] == ["pump-a", "pump-b"]
    assert f.class_names == ["normal", "fault"] and f.channel_names == ["Ia", "Va"]
    assert list(f.channel_scale) == [1000.0, 1.0]
    a, b = f.devices
    # pump-a: a.csv 1.5 s normal + 1.5 s fault at 2 kHz after resampling, then 2 s of b.wav (fault)
    per_block = 9                                                 # (200 - 40) / 20 + 1 windows of a 100 ms block
    assert np.bincount(a.y).tolist() == [15 * per_block, 15 * per_block + 20 * per_block]
    # resampled 4 kHz -> 2 kHz: the 50 Hz sine keeps its amplitude and phase (away from the file's ends)
    w = a.x[a.spans[:, 0] == 0]
    s = a.spans[a.spans[:, 0] == 0]
    mid = (s[:, 1] > 100) & (s[:, 2] < 5900)
    want = np.stack([sine(6000, RATE, 60), sine(6000, RATE, 0.6)], axis=1)
    ref = np.stack([want[i:j] for i, j in s[mid, 1:]])
    assert np.max(np.abs(w[mid] - ref) / np.array([60, 0.6])) < 0.01
    # the WAV's int16 samples are fractions of full scale
    assert np.isclose(np.abs(a.x[a.spans[:, 0] == 1][..., 0]).max(), 20000 / 32768, rtol=1e-3)
    # pump-b: the fault episode inside normal running; the EI file's channels picked by name
    assert np.bincount(b.y).tolist() == [20 * per_block + 10 * per_block, 10 * per_block]
    d = b.x[b.spans[:, 0] == 1]
    assert np.allclose(np.abs(d[..., 0]).max(), 60, rtol=1e-3) and np.allclose(np.abs(d[..., 1]).max(), 0.6, rtol=1e-3)
    # groups: blocks inside one segment of one recording
    for p in (a, b):
        for g in np.unique(p.groups):
            m = p.groups == g
            assert len(np.unique(p.spans[m, 0])) == 1 and len(np.unique(p.y[m])) == 1
            assert p.spans[m, 2].max() - p.spans[m, 1].min() <= 200
    # public pool: classes by name through the class map; the other four leave a warning
    assert set(np.unique(f.public.y).tolist()) == {0, 1}
    assert any("LL, LLG, LLL, LLLG" in w for w in f.info["warnings"])
    assert f.info["unlabelled"] == {"pump-b": ["e.csv"]}


def _no_devices(r):
    for d in ("pump-a", "pump-b"):
        shutil.rmtree(r / d)


def _rewrite(path, old, new):
    path.write_text(path.read_text().replace(old, new))


BAD = [
    ("no device folders", _no_devices, "holds no device folders"),
    ("device without labels", lambda r: (r / "pump-b" / "labels.csv").unlink(), "device pump-b: no labelled"),
    ("label not in the vocabulary", lambda r: _rewrite(r / "pump-b" / "labels.csv", "d.json,normal", "d.json,leak"),
     "label 'leak' is not a class"),
    ("segment outside its recording", lambda r: _rewrite(r / "pump-b" / "labels.csv", "2,3", "2,4"),
     "lies outside c.npy"),
    ("overlapping segments, two labels", lambda r: _rewrite(r / "pump-b" / "labels.csv", "c.npy,fault,1,2", "c.npy,fault,0.5,2"),
     "overlap in c.npy with different labels"),
    ("empty recording", lambda r: (r / "pump-a" / "a.csv").write_text("time;Ia;Va\n"), "empty recording"),
    ("rate that cannot be resampled", lambda r: _rewrite(r / "pump-b" / "d.json", '"interval_ms": 0.5', '"interval_ms": 0.50013'),
     "cannot be resampled"),
    ("channel missing on one device", lambda r: _rewrite(r / "pump-b" / "d.json", '"name": "Va"', '"name": "Vb"'),
     "d.json: no channel Va"),
    ("name clash after case folding", lambda r: shutil.copytree(r / "pump-a", r / "PUMP-A"), "differ only in case"),
    ("non-UTF-8 CSV", lambda r: (r / "pump-a" / "a.csv").write_bytes("time;Ia;Va\n0;1;\xe9\n".encode("latin-1")),
     "not UTF-8"),
    ("WAV with 0 frames", lambda r: write_wav(r / "pump-a" / "b.wav", np.zeros((0, 2)), 2000), "WAV with 0 frames"),
    ("a labelled file that is missing", lambda r: (r / "pump-a" / "b.wav").unlink(), "no recording b.wav"),
    ("a unit no table converts", lambda r: _add_units(r, 'Ia = "A"\nVa = "V"\n'),
     "d.json: channel Va is in 'pu', the run's unit is 'V'"),
    ("a unit of another quantity", lambda r: _add_units(r, 'Ia = "A"\n', ('"units": "A"', '"units": "mV"')),
     "d.json: channel Ia is in 'mV', the run's unit is 'A'"),
]


def _add_units(root, table: str, ei=None) -> None:
    with open(root / "fleet.toml", "a") as fh:
        fh.write("[units]\n" + table)
    if ei:
        _rewrite(root / "pump-b" / "d.json", *ei)


@pytest.mark.parametrize("what,damage,message", BAD, ids=[b[0] for b in BAD])
def test_bad_fleet_is_one_clear_error(fleet_root, what, damage, message):
    from fedtiny.trainer.data.fleet import DataError

    damage(fleet_root)
    with pytest.raises(DataError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load(fleet_root)


def test_units_converted_exactly_to_the_runs(fleet_root):
    """fleet.toml says Ia in A; an Edge Impulse file in mA (values x 1000) and a public pool in mA
    both train on the same amperes; spelling variants of one unit are the same unit."""
    from fedtiny.trainer.data.fleetdir import unit_factor

    ref = load(fleet_root)
    _add_units(fleet_root, 'Ia = "A"\nVa = "pu"\n')
    d = fleet_root / "pump-b" / "d.json"
    doc = json.loads(d.read_text())
    doc["payload"]["sensors"][1]["units"] = "mA"
    doc["payload"]["values"] = [[v, i * 1000.0] for v, i in doc["payload"]["values"]]
    d.write_text(json.dumps(doc))
    f = load(fleet_root)
    assert np.allclose(f.devices[1].x, ref.devices[1].x, rtol=1e-12, atol=0)
    assert np.array_equal(f.devices[0].x, ref.devices[0].x)
    assert unit_factor("g", "m/s2", "f", "ax") == 9.80665 and unit_factor("m/s^2", "g", "f", "ax") == 1 / 9.80665
    assert unit_factor("mg", "m/s^2", "f", "ax") == 1e-3 * 9.80665 and unit_factor("", "V", "f", "x") == 1.0


def test_public_pool_units_follow_the_fleet(fleet_root, tmp_path):
    """A fleet-folder public pool whose fleet.toml gives Ia in mA is scaled to the fleet's A; one in
    a unit of another quantity is one error naming its file."""
    from fedtiny.trainer.config import TrainConfig
    from fedtiny.trainer.data.fleet import DataError
    from fedtiny.trainer.data.fleetdir import load_public, run_fields

    _add_units(fleet_root, 'Ia = "A"\n')
    pub = make_fleet(tmp_path / "P")
    shutil.rmtree(pub / "pump-a")
    for f in ("d.json", "e.csv"):
        (pub / "pump-b" / f).unlink()
    _rewrite(pub / "pump-b" / "labels.csv", "d.json,normal\n", "")

    def pool():
        cfg = TrainConfig(**run_fields(str(pub), fleet_root, WINDOWING, cache=False), public=str(pub))
        return load_public(cfg, cache=False).public

    ref = pool()
    np.save(pub / "pump-b" / "c.npy", np.load(pub / "pump-b" / "c.npy") * np.array([1000.0, 1.0]))
    _add_units(pub, 'Ia = "mA"\n')
    assert np.allclose(pool().x, ref.x, rtol=1e-6, atol=0)
    _rewrite(pub / "fleet.toml", 'Ia = "mA"', 'Ia = "V"')
    with pytest.raises(DataError, match=r"c\.npy: channel Ia is in 'V', the run's unit is 'A'"):
        pool()


def test_cli_bad_fleet_is_one_error_line_and_exit_2(fleet_root, tmp_path):
    from click.testing import CliRunner

    from fedtiny.cli import main

    _rewrite(fleet_root / "pump-b" / "labels.csv", "d.json,normal", "d.json,leak")
    res = CliRunner().invoke(main, ["train", "--fleet", str(fleet_root), "--public", "electrical", "--window-ms",
                                    "20", "--hop-ms", "10", "--block-ms", "100", "--out", str(tmp_path / "R")])
    assert res.exit_code == 2
    lines = [x for x in res.output.splitlines() if x.strip()]
    assert lines[-1].startswith("error: ") and "label 'leak'" in lines[-1] and "Traceback" not in res.output
    assert not (tmp_path / "R" / "report.json").exists()


def test_export_writes_whole_folders_or_none(tmp_path):
    from click.testing import CliRunner

    from fedtiny.cli import main

    (tmp_path / "P").mkdir()
    res = CliRunner().invoke(main, ["data", "export", "electrical", "--devices", "2", "--samples-per-device", "40",
                                    "--public-samples", "12", "--out", str(tmp_path / "F"), "--public-out",
                                    str(tmp_path / "P")])
    assert res.exit_code == 2 and "exists" in res.output
    assert not (tmp_path / "F").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["P"]          # no temporary folder left behind
