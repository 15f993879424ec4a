"""Real data in the public copies' exact forms (files built from the built-in physics, no download):
the classData.csv / detect_dataset.csv loaders, the CWRU tree loader, groups without leakage, the
small-data split rule, the decode cache and the too-little-data errors."""
from __future__ import annotations

import hashlib
import shutil
import time

import numpy as np
import pytest

import realdata
from fedtiny.trainer.config import TrainConfig
from fedtiny.trainer.data import electrical as E
from fedtiny.trainer.data import load_fleet
from fedtiny.trainer.data.blocks import block_spans, blocked_windows, shared_rows
from fedtiny.trainer.data.cwru import load_cwru
from fedtiny.trainer.data.fleet import DataError, TooLittleData, assign_groups, concentrate
from fedtiny.trainer.dataprep import prepare_data, suggest
from fedtiny.trainer.splits import PARTS, repair_parts, split_device


@pytest.fixture(scope="module")
def class_csv(tmp_path_factory):
    return realdata.write_class_data(tmp_path_factory.mktemp("csv") / "classData.csv")


@pytest.fixture(scope="module")
def detect_csv(tmp_path_factory):
    return realdata.write_detect_data(tmp_path_factory.mktemp("csv") / "detect_dataset.csv")


@pytest.fixture(scope="module")
def cwru_tree(tmp_path_factory):
    return realdata.write_cwru_tree(tmp_path_factory.mktemp("cwru") / "CWRU", seconds=2.0)


def _pools(f):
    return [f.public, *f.devices]


def _no_shared_rows(f):
    pools = _pools(f)
    spans = np.concatenate([p.spans for p in pools])
    groups = np.concatenate([p.groups for p in pools])
    return shared_rows(spans, groups)


# ---------------------------------------------------------------- the test files are what they claim

def test_class_data_file_has_the_public_form(class_csv):
    raw = class_csv.read_bytes()
    assert raw.startswith(b"G,C,B,A,Ia,Ib,Ic,Va,Vb,Vc\r\n") and raw.count(b"\r\n") == raw.count(b"\n")
    x, y, form = E.read_fault_csv(class_csv)
    assert form == "classData" and 7600 <= len(y) <= 8000
    runs = E.label_runs(y)
    assert len(runs) == 6 and len({int(y[a]) for a, _ in runs}) == 6         # one contiguous run per class
    for a, b in runs:
        cycles = (b - a) / 400
        assert (5.5 < cycles < 6.2) if y[a] == E.NF else (2.5 <= cycles <= 2.8)
    assert b"0,1,1,0," in raw                                                   # LL (B-C) is labelled 0110
    ll = x[y == E.LL][400:]                                                     # after the inception cycle
    assert np.abs(ll[:, 0]).max() < 150 and np.abs(ll[:, 1]).max() > 600        # phase A healthy, B-C faulted
    assert np.allclose(x[:, 3:].sum(axis=1), 0, atol=1e-4)                      # line-to-line voltages


# ---------------------------------------------------------------- electrical CSV

def test_csv_blocks_windows_and_no_shared_raw_row(class_csv):
    f = E.load_csv(class_csv, n_devices=3, alpha=0.5, seed=0, cache=False)
    assert f.input_shape == (20, 6) and f.sample_rate_hz == 2000.0 and f.info["form"] == "classData"
    assert f.info["window_rows"] == 200 and f.info["hop_rows"] == 10 and f.info["block_rows"] == 250
    assert _no_shared_rows(f) == []
    x, y = E.read_class_csv(class_csv)
    for p in _pools(f):
        for g in np.unique(p.groups):
            s = p.spans[p.groups == g]
            assert s[:, 2].max() - s[:, 1].min() <= 250                       # inside one 12.5 ms block
            assert len(np.unique(y[s[:, 1].min():s[:, 2].max()])) == 1         # and inside one label run
        # every window is the 10-row average of its own raw rows
        k = len(p) // 2
        a, b = p.spans[k, 1:]
        assert np.allclose(p.x[k], x[a:b].reshape(20, 10, 6).mean(axis=1), atol=1e-4)
    # neighbouring blocks of a run are at least the 10-row guard gap apart
    ends = {}
    for p in _pools(f):
        for g in np.unique(p.groups):
            s = p.spans[p.groups == g]
            ends[int(g)] = (int(s[:, 1].min()), int(s[:, 2].max()))
    iv = sorted(ends.values())
    assert all(b[0] - a[1] >= 10 for a, b in zip(iv, iv[1:]))
    # the shortest fault run still yields several blocks
    blocks_per_class = {}
    for p in _pools(f):
        for g in np.unique(p.groups):
            blocks_per_class.setdefault(int(p.y[p.groups == g][0]), set()).add(int(g))
    assert min(len(v) for k, v in blocks_per_class.items() if k != E.NF) >= 3


def test_block_machinery_guard_and_boundaries():
    assert block_spans(0, 1000, 250, 10, 200) == [(0, 250), (260, 510), (520, 770), (780, 1000)]
    assert block_spans(0, 970, 250, 10, 200) == [(0, 250), (260, 510), (520, 770)]   # 190-row tail < a window
    starts, blk = blocked_windows(0, 1000, 250, 10, 200, 10)
    assert np.all(starts + 200 <= np.array([[0, 250], [260, 510], [520, 770], [780, 1000]])[blk, 1])
    assert np.all(starts >= np.array([0, 260, 520, 780])[blk])
    # a shared row is detected
    spans = np.array([[0, 0, 10], [0, 5, 15], [0, 20, 30]])
    assert shared_rows(spans, np.array([1, 2, 3])) == [(1, 2)]
    assert shared_rows(spans, np.array([1, 1, 3])) == []


def test_detect_dataset_form_is_a_two_class_set(detect_csv):
    head = detect_csv.read_bytes().split(b"\r\n")[:2]
    assert head[0] == b"Output (S),Ia,Ib,Ic,Va,Vb,Vc,," and head[1].endswith(b",,")
    x, y, form = E.read_fault_csv(detect_csv)
    assert form == "detect" and len(y) == 12001 and np.bincount(y).tolist() == [6505, 5496]
    f = E.load_csv(detect_csv, n_devices=3, seed=0, cache=False)
    assert f.class_names == ["no_fault", "fault"] and f.n_classes == 2
    assert _no_shared_rows(f) == []
    for d in f.devices:
        assert set(np.unique(d.y)) == {0, 1}


def test_per_sample_mode_and_its_model(class_csv):
    f = E.load_csv(class_csv, n_devices=3, seed=0, window_ms=0, cache=False)
    assert f.input_shape == (1, 6) and f.sample_rate_hz == 20000.0 and f.info["input"] == "sample"
    assert _no_shared_rows(f) == []
    x, _ = E.read_class_csv(class_csv)
    p = f.devices[0]
    assert np.allclose(p.x[:, 0, :], x[p.spans[:, 1]], atol=1e-4)              # each sample is one raw row
    from fedtiny.trainer.model import ModelSpec, build_model

    spec = ModelSpec(f.input_shape, f.n_classes)
    assert all(k == 1 for _, k, _ in spec.conv_plan())
    model = build_model(spec, 0)
    assert model.predict(np.zeros((2, 1, 6), np.float32), verbose=0).shape == (2, 6)
    from fedtiny.codegen.tflite_model import read_model
    from fedtiny.trainer.quantize import Converter

    with Converter() as conv:                 # full-integer INT8 with the TFLM-friendly op set
        tfl = conv.convert(spec, model.get_weights(), (p.x[:50] / f.channel_scale).clip(-1, 1))
    assert set(read_model(tfl).ops) <= {"CONV_2D", "RESHAPE", "AVERAGE_POOL_2D", "FULLY_CONNECTED", "SOFTMAX"}


def test_bad_csv_geometry_is_refused(class_csv):
    with pytest.raises(DataError, match="multiple of 0.5 ms"):
        E.load_csv(class_csv, n_devices=3, window_ms=7.3, cache=False)
    with pytest.raises(DataError, match="--block-ms"):
        E.load_csv(class_csv, n_devices=3, block_ms=5, cache=False)


# ---------------------------------------------------------------- CWRU as shipped

def test_cwru_tree_names_skips_and_blocks(cwru_tree):
    f = load_cwru(cwru_tree, n_devices=3, seed=0, min_device_samples=20, cache=False)
    files = {r["file"] for p in _pools(f) for r in p.condition["recordings"]}
    assert len(files) == 37 and "12k_DE/B007_0.mat" in files and "Normal/Normal_0.mat" in files
    rec = {r["file"]: r for p in _pools(f) for r in p.condition["recordings"]}
    assert rec["12k_DE/B007_0.mat"]["variable"] == "X118_DE_time"              # the DE channel, not FE
    assert rec["12k_DE/OR021@6_3.mat"]["variable"] == "X237_DE_time" and rec["12k_DE/OR021@6_3.mat"]["rpm"] == 1730
    assert rec["Normal/Normal_0.mat"]["rate_hz"] == 48000
    line = f.info["skipped"]
    assert line.startswith("skipped 2 file(s)") and "\n" not in line
    assert "fan-end" in line and "12k_FE/IR007_0.mat" in line
    assert "48 kHz drive-end fault" in line and "48k_DE/IR007_0.mat" in line
    assert _no_shared_rows(f) == []
    # block groups: 8 per recording, each window inside one block of its recording
    for p in _pools(f):
        assert np.all(p.groups // 1000 == p.spans[:, 0])
    n = {int(g) // 1000 for p in _pools(f) for g in p.groups}
    assert 97 in n and len({int(g) for p in _pools(f) for g in p.groups if int(g) // 1000 == 118}) == 8


def test_cwru_single_healthy_recording_reaches_test_splits(cwru_tree):
    for n_dev in (3, 10):
        cfg = TrainConfig(dataset=str(cwru_tree), devices=n_dev, seed=0)
        fleet, splits = prepare_data(cfg)
        assert any((s.test.y == 0).any() for s in splits), n_dev
        for s in splits:                        # every device tests every class it trains on
            assert set(np.unique(s.train_all().y)) <= set(np.unique(s.test.y))
    strict = TrainConfig(dataset=str(cwru_tree), devices=3, seed=0, group_by="recording")
    fleet, splits = prepare_data(strict)
    assert not any((s.test.y == 0).any() for s in splits)   # one healthy recording: never in a test split
    for p in _pools(fleet):
        assert np.all(p.groups == p.spans[:, 0])


def test_cwru_record_number_from_variables_and_duplicates(tmp_path, cwru_tree):
    d = tmp_path / "copy"
    shutil.copytree(cwru_tree / "12k_DE", d / "12k_DE")
    shutil.copytree(cwru_tree / "Normal", d / "Normal")
    shutil.copy(cwru_tree / "12k_DE" / "B007_0.mat", d / "118.mat")           # record 118 under a second name
    with pytest.raises(DataError, match=r"record 118 appears twice: .*B007_0\.mat and .*118\.mat|"
                                        r"record 118 appears twice: 118\.mat and 12k_DE/B007_0\.mat"):
        load_cwru(d, n_devices=3, cache=False)


# ---------------------------------------------------------------- dealing and the split rule

def test_concentrate_and_min_groups():
    assert concentrate([1, 1, 1, 0, 3], [0.1, 0.2, 0.3, 0.0, 0.4], 2).tolist() == [0, 2, 2, 0, 2]
    assert concentrate([1, 0, 0], [0.5, 0.3, 0.2], 2).tolist() == [1, 0, 0]          # the only holder
    assert concentrate([2, 3, 1], [0.3, 0.5, 0.2], 1).tolist() == [2, 3, 1]          # min 1: unchanged
    c = concentrate([1, 1, 1, 1, 1, 1], np.full(6, 1 / 6), 2)
    assert c.sum() == 6 and set(c.tolist()) <= {0, 2}
    y = np.repeat([0, 1], 7)
    parts = assign_groups(y, np.arange(14), np.full((5, 2), 0.2), np.random.default_rng(0), min_groups=2)
    for p in parts:
        for k in (0, 1):
            assert (y[p] == k).sum() in (0, 2, 3, 4, 5, 6, 7)


def test_repair_parts_rule():
    # six groups of two classes, all in one training split: test gets one of each class, the
    # training splits one group each, and the threshold-validation split one of each side; Phase 2's
    # validation group went to it (split_device then lets Phase 2 validate on phase3_val)
    part = {g: "phase2_train" for g in range(1, 7)}
    cls = {1: 0, 2: 0, 3: 1, 4: 1, 5: 1, 6: 1}
    out = repair_parts(part, cls)
    assert sorted(cls[g] for g in out if out[g] == "test") == [0, 1]
    assert sorted(cls[g] for g in out if out[g] == "phase3_val") == [0, 1]
    for need in ("phase2_train", "phase3_tune"):
        assert sum(1 for g in out if out[g] == need) == 1
    assert not any(out[g] == "phase2_val" for g in out)
    # five groups cannot serve four required splits and test coverage of two classes: the required
    # splits win, and one class loses its test group
    five = {1: "phase2_train", 2: "phase2_train", 3: "test", 4: "phase2_train", 5: "phase3_tune"}
    out = repair_parts(five, {1: 0, 2: 0, 3: 1, 4: 1, 5: 1})
    assert all(any(out[g] == need for g in out) for need in ("phase2_train", "phase3_tune", "phase3_val"))
    assert sorted({1: 0, 2: 0, 3: 1, 4: 1, 5: 1}[g] for g in out if out[g] == "phase3_val") == [0, 1]
    assert sum(1 for g in out if out[g] == "test") == 1
    # nothing to repair: unchanged
    ok = {1: "test", 2: "phase2_train", 3: "phase2_val", 4: "phase3_tune", 5: "phase3_val", 6: "phase1"}
    assert repair_parts(ok, {g: 0 for g in ok}) == ok


def test_builtin_splits_are_unchanged(monkeypatch):
    """Rules 1-2 of the split repair never touch the built-in fleets (the first digests were taken
    before the repair existed); rule 3 (both sides in the threshold-validation split) moves a group
    only where the plain rounding left that split one-sided: electrical device 1 (6 normal windows)."""
    from fedtiny.trainer import splits as split_mod

    def digest(ds):
        f = load_fleet(ds, n_devices=3, alpha=0.5, seed=0, samples_per_device=160, public_samples=300)
        h = hashlib.sha256()
        h.update(f.public.groups.tobytes())
        for i, p in enumerate(f.devices):
            s = split_device(p, 0.2, (0.2, 0.5, 0.3), 0.2, 0.4, 0, i)
            assert set(np.unique(s.phase3_val.y != 0).tolist()) == {False, True}, (ds, i)
            for name in PARTS:
                part = getattr(s, name)
                h.update(part.groups.tobytes())
                h.update(part.y.tobytes())
        return h.hexdigest()

    with_rule3 = {"electrical": "e55246f3e602e98402f23995980476607ccc488abb3018764c6653e5e7be00c0",
                  "mechanical": "c98a1723e7486e12364478281f0aaccb479c74c5db4c21c13a6223a778c8084f"}
    for ds, want in with_rule3.items():
        assert digest(ds) == want, ds
    before = {"electrical": "949ab7f8fb3a6351388c3b7a26b9bf90b33658d6427f9648d378083bfeb2609f",
              "mechanical": "c98a1723e7486e12364478281f0aaccb479c74c5db4c21c13a6223a778c8084f"}
    monkeypatch.setattr(split_mod, "_two_sided", lambda part, class_of: part)
    with pytest.raises(AssertionError):
        digest("electrical")                  # without rule 3, device 1's split is one-sided
    f = load_fleet("electrical", n_devices=3, alpha=0.5, seed=0, samples_per_device=160, public_samples=300)
    h = hashlib.sha256()
    h.update(f.public.groups.tobytes())
    for i, p in enumerate(f.devices):
        s = split_device(p, 0.2, (0.2, 0.5, 0.3), 0.2, 0.4, 0, i)
        for name in PARTS:
            h.update(getattr(s, name).groups.tobytes())
            h.update(getattr(s, name).y.tobytes())
    assert h.hexdigest() == before["electrical"]


def test_csv_splits_never_put_a_group_on_both_sides(class_csv):
    for seed in (0, 1, 2):
        fleet, splits = prepare_data(TrainConfig(dataset=str(class_csv), devices=3, seed=seed))
        for s in splits:
            owner = {}
            shared = np.array_equal(s.phase2_val.groups, s.phase3_val.groups)   # Phase 2 validates on phase3_val
            for name in PARTS:
                if shared and name == "phase2_val":
                    continue
                for g in np.unique(getattr(s, name).groups):
                    assert owner.setdefault(int(g), name) == name
            for name in ("test", "phase2_train", "phase2_val", "phase3_tune", "phase3_val"):
                assert len(getattr(s, name)) > 0


# ---------------------------------------------------------------- errors and options

def test_too_little_data_names_options_that_work(class_csv):
    cfg = TrainConfig(dataset=str(class_csv), devices=8, seed=0)
    with pytest.raises(TooLittleData) as e:
        prepare_data(cfg)
    msg = str(e.value)
    assert "it runs with" in msg and "--devices" in msg
    from dataclasses import replace

    for fix in suggest(cfg):                    # every option named really works
        opt, val = fix.split()
        field = opt[2:].replace("-", "_")
        typed = type(getattr(cfg, field))(val) if getattr(cfg, field) is not None else float(val)
        prepare_data(replace(cfg, **{field: typed}))


def test_samples_per_device_is_refused_on_real_data(class_csv):
    with pytest.raises(DataError, match="samples-per-device"):
        TrainConfig(dataset=str(class_csv), samples_per_device=100)
    from click.testing import CliRunner

    from fedtiny.cli import main

    res = CliRunner().invoke(main, ["train", "--dataset", str(class_csv), "--samples-per-device", "400",
                                    "--out", "unused"])
    assert res.exit_code == 2 and "samples-per-device" in res.output and "Traceback" not in res.output


# ---------------------------------------------------------------- cache

def test_cache_second_load_is_fast_and_identical(tmp_path, monkeypatch, cwru_tree):
    monkeypatch.setenv("FEDTINY_CACHE", str(tmp_path / "cache"))
    t0 = time.perf_counter()
    a = load_cwru(cwru_tree, n_devices=3, seed=0)
    first = time.perf_counter() - t0
    entries = sorted(p.name for p in (tmp_path / "cache").iterdir())
    assert entries and all(n.startswith("cwru-") and n.endswith(".bin") for n in entries if n != "stat")
    assert not any(n.startswith(".tmp") for n in entries)
    t0 = time.perf_counter()
    b = load_cwru(cwru_tree, n_devices=3, seed=0)
    second = time.perf_counter() - t0
    assert second < 1.0 and second < first
    for p, q in zip(_pools(a), _pools(b)):
        np.testing.assert_array_equal(p.x, q.x)
        np.testing.assert_array_equal(p.groups, q.groups)
    c = load_cwru(cwru_tree, n_devices=3, seed=0, cache=False)
    np.testing.assert_array_equal(a.devices[0].x, c.devices[0].x)
    # an edited file gets a new entry (its SHA-256 changed)
    n_before = len(list((tmp_path / "cache").iterdir()))
    e = tmp_path / "edited"
    shutil.copytree(cwru_tree, e)
    realdata.write_cwru_tree(e, seconds=2.0, seed=5, extras=False)
    load_cwru(e, n_devices=3, seed=0)
    assert len(list((tmp_path / "cache").iterdir())) > n_before


def _assert_same_fields(fresh: dict, back: dict, what: str) -> None:
    assert sorted(fresh) == sorted(back), what
    for k, v in fresh.items():
        v = np.asarray(v)
        assert back[k].shape == v.shape, f"{what} {k}: shape {back[k].shape} != {v.shape}"
        assert back[k].dtype == v.dtype, f"{what} {k}: dtype {back[k].dtype} != {v.dtype}"
        np.testing.assert_array_equal(back[k], v, err_msg=f"{what} {k}")


def test_every_cached_field_round_trips_with_shape_and_dtype(tmp_path, monkeypatch, class_csv, detect_csv,
                                                             cwru_tree):
    """What every decoder caches comes back from ``pack``/``unpack`` with its shape, dtype and
    values (a 0-d string such as the CSV's ``form`` stays 0-d), and a cache hit reads the two-class
    detect_dataset.csv as two classes, as the first (decoding) load did."""
    from fedtiny.trainer.data.cache import pack, unpack
    from fedtiny.trainer.data.cwru import _decode_mat, to_target_rate

    decoded = {"classData": E._decoded_csv(class_csv), "detect": E._decoded_csv(detect_csv)}
    mats = sorted(cwru_tree.rglob("*.mat"))
    decoded.update({f"mat {p.name}": _decode_mat(p) for p in mats[:3]})
    decoded["resampled"] = {"x": to_target_rate(np.ones(4800), 48000, "x").astype(np.float32)}
    decoded["odd shapes"] = {"scalar": np.float64(2.5), "empty": np.zeros((0, 3), np.int16),
                             "fortran": np.asfortranarray(np.arange(6.0).reshape(2, 3)),
                             "strided": np.arange(10)[::3], "flags": np.array([True, False])}
    assert decoded["detect"]["form"].shape == ()
    for what, fresh in decoded.items():
        _assert_same_fields(fresh, unpack(pack(fresh)), what)

    monkeypatch.setenv("FEDTINY_CACHE", str(tmp_path / "cache"))
    first = E.load_csv(detect_csv, n_devices=3, seed=0)             # decodes and writes the entry
    hit = E.load_csv(detect_csv, n_devices=3, seed=0)               # reads the entry
    assert any(p.suffix == ".bin" for p in (tmp_path / "cache").iterdir())
    assert first.class_names == hit.class_names == list(E.DETECT_CLASS_NAMES)
    assert hit.info["form"] == "detect" and hit.info["loader"] == "detect_dataset.csv"
    np.testing.assert_array_equal(first.devices[0].y, hit.devices[0].y)


def test_record_number_rules():
    from pathlib import Path

    from fedtiny.trainer.data.cwru import record_number

    assert record_number(Path("105.mat"), ["X999_DE_time"]) == 105                  # a numeric name wins
    assert record_number(Path("12k_DE/B007_0.mat"), ["X118_DE_time", "X118_FE_time", "X118RPM"]) == 118
    assert record_number(Path("Normal/Normal_2.mat"), ["X098_DE_time", "X099_DE_time"]) == 99   # load 2
    assert record_number(Path("12k_DE/IR028_1.mat"), ["X057_DE_time"]) == 3002
    assert record_number(Path("x/odd.mat"), ["X105_FE_time"]) is None
    with pytest.raises(DataError, match="records 105, 106"):
        record_number(Path("x/odd.mat"), ["X105_DE_time", "X106_DE_time"])


def test_negation_augments_only_csv_training_parts(class_csv, cwru_tree):
    on = prepare_data(TrainConfig(dataset=str(class_csv), devices=3, seed=0))
    off = prepare_data(TrainConfig(dataset=str(class_csv), devices=3, seed=0, negate_augment=False))
    assert len(on[0].public) == 2 * len(off[0].public)
    for a, b in zip(on[1], off[1]):
        for name in ("phase1", "phase2_train", "phase3_tune"):
            pa, pb = getattr(a, name), getattr(b, name)
            assert len(pa) == 2 * len(pb)
            np.testing.assert_array_equal(pa.x[len(pb):], -pb.x)
        for name in ("test", "phase2_val", "phase3_val"):
            np.testing.assert_array_equal(getattr(a, name).x, getattr(b, name).x)
    cw = prepare_data(TrainConfig(dataset=str(cwru_tree), devices=3, seed=0))
    assert "negate_augment" not in cw[0].info


def test_labels_csv_by_file_name(tmp_path, cwru_tree):
    from scipy.io import savemat

    from fedtiny.trainer.data import mechanical as M

    d = tmp_path / "tree"
    shutil.copytree(cwru_tree, d)
    sig = M.bearing_signal("ball", 1, np.random.default_rng(4), n_samples=24000)[0]
    (d / "mine").mkdir()
    savemat(d / "mine" / "rig_a.mat", {"X777_DE_time": sig[:, None]})
    f = load_cwru(d, n_devices=3, seed=0, cache=False)
    assert "mine/rig_a.mat" in f.info["skipped"]
    (d / "labels.csv").write_text("file,label\nmine/rig_a.mat,ball\n")
    f = load_cwru(d, n_devices=3, seed=0, cache=False)
    rec = {r["file"]: r for p in _pools(f) for r in p.condition["recordings"]}
    assert rec["mine/rig_a.mat"]["label"] == "ball" and rec["mine/rig_a.mat"]["label_source"] == "labels.csv"


def test_no_cache_option_writes_no_cache(tmp_path, monkeypatch, cwru_tree):
    import os

    from click.testing import CliRunner

    from fedtiny.cli import main

    monkeypatch.setenv("FEDTINY_CACHE", str(tmp_path / "c"))
    args = ["train", "--dataset", str(cwru_tree), "--devices", "200"]
    res = CliRunner().invoke(main, args + ["--no-cache", "--out", str(tmp_path / "r1")])
    assert res.exit_code == 2 and "error:" in res.output          # too many devices: fails after loading
    assert not (tmp_path / "c").exists() and "FEDTINY_NO_CACHE" not in os.environ
    res = CliRunner().invoke(main, args + ["--out", str(tmp_path / "r2")])
    assert "it runs with --devices" in res.output
    assert res.exit_code == 2 and any(p.suffix == ".bin" for p in (tmp_path / "c").iterdir())
