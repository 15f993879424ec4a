"""Bad input through the real CLI: one clear line on stderr, exit code 2, no traceback."""
from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from fedtiny.cli import main

HEADER = "G,C,B,A,Ia,Ib,Ic,Va,Vb,Vc"
CODES = ["0,0,0,0", "1,0,0,1", "0,1,1,0", "1,0,1,1", "0,1,1,1", "1,1,1,1"]


def _csv(path, rows_per_class=2400, header=HEADER, mutate=None, codes=CODES):
    rng = np.random.default_rng(0)
    lines = [header]
    t = np.arange(rows_per_class) / 20000.0
    for c, code in enumerate(codes):
        for i in range(rows_per_class):
            vals = [100 * (c + 1) * np.sin(2 * np.pi * 50 * t[i] + k) + rng.normal() for k in range(3)]
            vals += [0.6 * np.sin(2 * np.pi * 50 * t[i] + k * 2.094) for k in range(3)]
            lines.append(code + "," + ",".join(f"{v:.6f}" for v in vals))
    if mutate:
        lines = mutate(lines)
    path.write_text("\r\n".join(lines) + "\r\n")
    return path


def _run(args):
    res = CliRunner().invoke(main, args)
    return res


def _assert_clean_error(res, *needles):
    assert res.exit_code == 2, res.output
    out = res.output.strip()
    assert "Traceback" not in out
    err_lines = [ln for ln in out.splitlines() if ln.startswith("error:")]
    assert len(err_lines) == 1, out
    for n in needles:
        assert n.lower() in err_lines[0].lower(), err_lines[0]


def test_missing_column(tmp_path):
    f = _csv(tmp_path / "c.csv", 50, header="G,C,B,A,Ia,Ib,Ic,Va,Vb")
    _assert_clean_error(_run(["train", "--dataset", str(f), "--out", str(tmp_path / "r")]), "Vc")


def test_extra_column(tmp_path):
    f = _csv(tmp_path / "c.csv", 50, mutate=lambda ls: [ls[0] + ",Vx"] + [l + ",0" for l in ls[1:]])
    _assert_clean_error(_run(["train", "--dataset", str(f), "--out", str(tmp_path / "r")]), "Vx")


@pytest.mark.parametrize("bad", ["nan", "inf"])
def test_non_finite_values(tmp_path, bad):
    def mutate(ls):
        parts = ls[5].split(",")
        parts[6] = bad
        ls[5] = ",".join(parts)
        return ls
    f = _csv(tmp_path / "c.csv", 50, mutate=mutate)
    _assert_clean_error(_run(["train", "--dataset", str(f), "--out", str(tmp_path / "r")]), "Ic")


def test_unknown_label(tmp_path):
    def mutate(ls):
        ls[3] = "1,1,0,0" + ls[3][7:]
        return ls
    f = _csv(tmp_path / "c.csv", 50, mutate=mutate)
    _assert_clean_error(_run(["train", "--dataset", str(f), "--out", str(tmp_path / "r")]), "1100")


def test_device_with_too_few_samples(tmp_path):
    f = _csv(tmp_path / "c.csv", 2000)
    _assert_clean_error(_run(["train", "--dataset", str(f), "--devices", "40", "--out", str(tmp_path / "r")]),
                        "device")


def test_single_class_device(tmp_path):
    f = _csv(tmp_path / "c.csv", 16000, codes=CODES[:1])    # 40 one-cycle windows, 32 for the device
    res = _run(["train", "--dataset", str(f), "--devices", "1", "--out", str(tmp_path / "r")])
    _assert_clean_error(res)
    assert "class" in res.output.lower()


def test_unreadable_mat_file(tmp_path):
    d = tmp_path / "cwru"
    d.mkdir()
    (d / "105.mat").write_bytes(b"this is not a MATLAB file")
    _assert_clean_error(_run(["train", "--dataset", str(d), "--out", str(tmp_path / "r")]), "105.mat")


def test_unknown_dataset(tmp_path):
    _assert_clean_error(_run(["train", "--dataset", str(tmp_path / "nope.csv"), "--out", str(tmp_path / "r")]),
                        "nope.csv")


def test_run_directory_with_a_different_config(tmp_path):
    from fedtiny.trainer.config import TrainConfig

    out = tmp_path / "r"
    (out / "state").mkdir(parents=True)
    (out / "config.json").write_text(json.dumps(TrainConfig(seed=0).to_dict()))
    (out / "state" / "progress.json").write_text(json.dumps(
        {"done": ["phase0"], "metrics_lines": 0, "weights": None, "timings": {}}))   # a started run
    res = _run(["train", "--seed", "1", "--out", str(out)])
    _assert_clean_error(res, "different config", "seed")
    same = _run(["train", "--seed", "0", "--out", str(out)])
    _assert_clean_error(same, "--resume")


def test_bad_splits_option(tmp_path):
    res = _run(["train", "--splits", "0.5,0.6", "--out", str(tmp_path / "r")])
    assert res.exit_code == 2 and "Traceback" not in res.output


@pytest.mark.parametrize("args, needle", [(["--seed", "-1"], "--seed"), (["--floor", "nan"], "--floor")])
def test_bad_numbers_are_clean_errors(tmp_path, args, needle):
    _assert_clean_error(_run(["train", *args, "--out", str(tmp_path / "r")]), needle)


@pytest.mark.parametrize("key,value,needle", [
    ("devices", 5000, "5000 is not in the range 1<=x<=1000"),
    ("alpha", 0, "0 is not in the range x>0"),
    ("rounds", 2.5, "'2.5' is neither an integer nor auto"),
    ("method", "fedsgd", "'fedsgd' is not one of"),
    ("splits", [0.5, 0.5], "three comma-separated fractions"),
])
def test_config_file_values_are_checked_as_the_options_are(tmp_path, key, value, needle):
    cfg = tmp_path / "cfg.json"
    cfg.write_text(json.dumps({"samples_per_device": 160, key: value}))
    res = _run(["server", "--insecure", "--config", str(cfg), "--out", str(tmp_path / "r")])
    _assert_clean_error(res, f"--config {cfg}", f"key '{key}'", needle)
    assert not (tmp_path / "r").exists() and not (tmp_path / ".r.flower").exists()


def test_config_file_values_convert_as_the_options_do(tmp_path):
    import click

    from fedtiny.flower_cli import server
    from fedtiny.options import file_values

    ctx = click.Context(server)
    got = file_values(ctx, {"splits": [0.2, 0.5, 0.3], "devices": 7, "personalize": False, "hop_ms": None,
                            "public_samples": 300}, "--config c.json")
    assert got == {"splits": (0.2, 0.5, 0.3), "devices": 7, "personalize": False, "hop_ms": None,
                   "public_samples": 300}
