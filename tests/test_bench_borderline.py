"""The bench tells a borderline disagreement from a real one.

The emulator's ``score_offset`` adds L LSB to the normal-class output, as a board whose kernels
round differently. The offsets are derived here from the run's own host scores: the smallest one
that flips at least one embedded window (borderline under the default tolerance of 1 LSB) and a
large one (a mismatch). The toy run's windows sit far from its threshold, so the borderline cases
use a copy whose threshold is moved onto one window's score (``edge_run``; decisions recomputed
with the trainer's rule, the model bytes unchanged), as a real device's threshold often is. Which windows flip and by how many LSB their scores then differ is computed
independently of the bench, and the bench's split must equal it.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from fedtiny.bench import Emulator, bench_device
from fedtiny.bench.cli import bench
from fedtiny.bench.scores import DEFAULT_TOLERANCE_LSB
from fedtiny.trainer.threshold import decide, dequantize


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    from test_bench import shared_run

    return shared_run(tmp_path_factory)


@pytest.fixture(scope="module")
def edge_run(run, tmp_path_factory) -> Path:
    """The shared run with device 3's threshold exactly at one window's fault score."""
    edge = tmp_path_factory.mktemp("edge") / "r"
    shutil.copytree(run, edge)
    d = edge / "devices" / "dev03"
    info = json.loads((d / "device.json").read_text())
    with np.load(d / "test_split.npz") as z:
        arrays = {k: z[k] for k in z.files}
    p = dequantize(arrays["out_int8"], info["output_scale"], info["output_zero_point"])
    fault_score = 1.0 - p[:, 0]
    i = int(np.argsort(fault_score)[len(fault_score) // 2])        # a middle window
    info["threshold"] = float(fault_score[i])                      # window i: fault, just
    arrays["pred_int8"] = decide(p, info["threshold"])
    (d / "device.json").write_text(json.dumps(info, indent=2))
    np.savez(d / "test_split.npz", **arrays)
    return edge


def _offset_effect(run: Path, offset: int):
    """{index: LSB gap} of the embedded windows whose decision flips under ``offset``."""
    d = run / "devices" / "dev03"
    info = json.loads((d / "device.json").read_text())
    with np.load(d / "test_split.npz") as z:
        out, pred = z["out_int8"].astype(int), z["pred_int8"]
    shifted = out.copy()
    shifted[:, 0] = np.clip(shifted[:, 0] + offset, -128, 127)
    new = decide(dequantize(shifted, info["output_scale"], info["output_zero_point"]), info["threshold"])
    gap = np.abs(shifted - out).max(axis=1)
    return {int(i): int(gap[i]) for i in np.flatnonzero(new != pred)}


def _smallest_flipping_offset(run: Path) -> int:
    for k in range(1, 128):
        for off in (k, -k):
            if _offset_effect(run, off):
                return off
    raise AssertionError("no offset flips any decision")


def _bench(run, port, out, *extra):
    return CliRunner().invoke(bench, ["--port", port, "--run", str(run), "--device", "3", "--out", str(out),
                                      "--timeout", "3", *extra], catch_exceptions=False)


def _result(out: Path) -> dict:
    (path,) = [p for p in out.iterdir() if p.suffix == ".json"]
    return json.loads(path.read_text())


def test_small_offset_is_borderline_and_passes(edge_run, tmp_path):
    run = edge_run
    off = _smallest_flipping_offset(run)
    flips = _offset_effect(run, off)
    assert abs(off) <= DEFAULT_TOLERANCE_LSB and flips
    out = tmp_path / "out"
    with Emulator(run, 3, score_offset=off) as emu:
        r = _bench(run, emu.port_path, out)
    assert r.exit_code == 0, r.output + r.stderr
    res = _result(out)
    assert res["status"] == "borderline" and res["ok"] is True and res["decision_mismatches"] == []
    assert {d["index"]: d["score_lsb_diff"] for d in res["borderline"]} == flips
    for d in res["borderline"]:
        assert d["device_pred"] != d["host_pred"] and len(d["device_scores"]) == len(d["host_scores"])
    assert "borderline:" in r.stderr and f"{len(flips)} decision(s)" in r.stderr
    assert "Traceback" not in r.output + r.stderr


def test_large_offset_is_a_mismatch_and_fails(run, tmp_path):
    off = 100 if _offset_effect(run, 100) else -100
    flips = _offset_effect(run, off)
    assert flips and all(g > DEFAULT_TOLERANCE_LSB for g in flips.values())
    out = tmp_path / "out"
    with Emulator(run, 3, score_offset=off) as emu:
        r = _bench(run, emu.port_path, out, "--stream", "4")
    assert r.exit_code == 1, r.output + r.stderr
    res = _result(out)
    assert res["status"] == "mismatch" and res["ok"] is False and res["borderline"] == []
    assert {d["index"]: d["score_lsb_diff"] for d in res["decision_mismatches"]} == flips
    # streamed windows are judged the same way (windows 0..3 of the split are streamed)
    assert {d["index"] for d in res["stream"]["decision_mismatches"]} == {i for i in flips if i < 4}
    assert "mismatch" in r.stderr


def test_same_offset_is_borderline_or_mismatch_by_tolerance(run):
    """On the toy run (windows far from the threshold) the smallest flipping offset is large:
    it is borderline only with a tolerance that covers its gap."""
    off = _smallest_flipping_offset(run)
    flips = _offset_effect(run, off)
    tight = min(flips.values()) - 1                    # just below the smallest gap
    with Emulator(run, 3, score_offset=off) as emu:
        loose = bench_device(emu.port_path, run, 3, timeout=3, tolerance_lsb=max(flips.values()))
        strict = bench_device(emu.port_path, run, 3, timeout=3, tolerance_lsb=tight)
    assert loose.status == "borderline" and len(loose.borderline) == len(flips)
    assert strict.status == "mismatch" and len(strict.decision_mismatches) == len(flips)


def test_runs_without_stored_scores_fall_back_to_tflite_micro(edge_run, tmp_path):
    """Older runs have no out_int8: the host scores are computed from the model bytes."""
    run = edge_run
    old = tmp_path / "old"
    shutil.copytree(run, old)
    npz = old / "devices" / "dev03" / "test_split.npz"
    with np.load(npz) as z:
        arrays = {k: z[k] for k in z.files if k != "out_int8"}
    np.savez(npz, **arrays)
    off = _smallest_flipping_offset(run)
    flips = _offset_effect(run, off)
    with Emulator(old, 3, score_offset=off) as emu:
        res = bench_device(emu.port_path, old, 3, timeout=3)
    assert res.status == "borderline"
    assert {d["index"]: d["score_lsb_diff"] for d in res.borderline} == flips
