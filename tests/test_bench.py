"""`fedtiny bench` end to end through a real pty with pyserial, against the emulator.

The emulator serves the run's model bytes and test vectors with tflite-micro, so the bench's
accuracy must equal the run's INT8 test accuracy sample for sample; with faults injected the bench
must still be right (or fail clearly) and never use a value from a corrupted line.
"""
from __future__ import annotations

import csv
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from fedtiny.bench import BenchError, Emulator, bench_device
from fedtiny.bench.cli import bench
from fedtiny.firmware import protocol as P


def shared_run(tmp_path_factory) -> Path:
    """One small real run directory per test session (shared with test_emulator.py)."""
    from runfixture import make_run_dir

    run = tmp_path_factory.getbasetemp() / "bench_run" / "runs" / "r1"
    if not (run / "report.json").is_file():
        make_run_dir(run, device=3)
    return run


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    return shared_run(tmp_path_factory)


def _split(run):
    with np.load(run / "devices" / "dev03" / "test_split.npz") as z:
        return z["y"], z["pred_int8"]


def _invoke(args):
    return CliRunner().invoke(bench, args, catch_exceptions=False)


def _intact_sample_lines(emu) -> set[str]:
    return {line for line, ok in emu.log if ok and line.startswith("@sample")}


def test_bench_end_to_end_matches_run_int8(run, tmp_path):
    y, pred = _split(run)
    out = tmp_path / "out"
    with Emulator(run, 3) as emu:
        r = _invoke(["--port", emu.port_path, "--run", str(run), "--device", "3", "--stream", "5",
                     "--out", str(out), "--timeout", "3"])
    assert r.exit_code == 0, r.output + r.stderr
    files = sorted(p.name for p in out.iterdir())
    stem = files[0].rsplit(".", 1)[0]
    assert files == [f"{stem}.csv", f"{stem}.json"] and stem.startswith("dev03_")
    res = json.loads((out / f"{stem}.json").read_text())
    assert res["accuracy"] == pytest.approx(float(np.mean(pred == y)))
    assert res["accuracy"] == pytest.approx(json.loads((run / "devices/dev03/device.json").read_text())["int8_acc"])
    assert res["expected_accuracy"] == res["accuracy"] and res["ok"] is True
    assert [s["pred"] for s in res["samples"]] == pred.tolist()          # sample for sample
    assert [s["label"] for s in res["samples"]] == y.tolist()
    assert res["decision_mismatches"] == [] and res["hash_ok"] is True and res["summary_agrees"] is True
    # the board's banner says where its threshold came from, and it agrees with device.json
    origin = json.loads((run / "devices/dev03/device.json").read_text()).get("threshold_origin") or "default"
    assert res["threshold_origin"] == res["expected_threshold_origin"] == origin
    assert res["threshold_origin_ok"] is True and f"({origin})" in r.output
    # clock=host labelled in every output
    assert res["clock"] == "host" and res["latency_us"]["clock"] == "host"
    assert res["device_summary"]["clock"] == "host" and res["stream"]["latency_us"]["clock"] == "host"
    rows = list(csv.DictReader(open(out / f"{stem}.csv")))
    assert len(rows) == len(y) + 5 and {row["clock"] for row in rows} == {"host"}
    assert [int(row["pred"]) for row in rows[:len(y)]] == pred.tolist()
    assert "host" in r.output and "clock" in r.output
    # streamed windows: decisions match the host, raw scores identical (same reference kernels)
    assert res["stream"]["n"] == 5 and res["stream"]["decision_mismatches"] == []
    assert res["stream"]["max_score_lsb_diff"] == 0


def test_bench_survives_corruption_and_a_stall(run, tmp_path):
    """10 % of lines corrupted and one 2-second stall: correct results, no value from a bad line."""
    y, pred = _split(run)
    out = tmp_path / "out"
    t0 = time.monotonic()
    with Emulator(run, 3, corrupt=0.10, stall=2.0, stall_after=12, seed=1) as emu:
        r = _invoke(["--port", emu.port_path, "--run", str(run), "--device", "3", "--stream", "4",
                     "--out", str(out), "--timeout", "3"])
    assert time.monotonic() - t0 < 300         # hang guard only: a 2 s stall, --timeout 3 per read
    assert r.exit_code == 0, r.output + r.stderr
    corrupted = [line for line, ok in emu.log if not ok]
    assert emu._stalled and any(c.startswith("@sample") for c in corrupted), "faults must have happened"
    res = json.loads(next(out.glob("*.json")).read_text())
    assert [s["pred"] for s in res["samples"]] == pred.tolist()
    assert res["accuracy"] == pytest.approx(float(np.mean(pred == y)))
    assert res["link"]["dropped_lines"] >= len([c for c in corrupted if c.startswith("@sample")])
    # every value the bench reports came from a line that reached the host intact
    intact = _intact_sample_lines(emu)
    for s in res["samples"]:
        if s["source"] == "run":
            assert P.format_sample(s["index"], s["pred"], s["label"], s["micros"]) in intact
    intact_infer = {line for line, ok in emu.log if ok and line.startswith("@infer")}
    for s in res["stream"]["samples"] + [s for s in res["samples"] if s["source"] == "infer"]:
        assert any(line.startswith(f"@infer pred={s['pred']} ") and f" us={s['micros']} " in line
                   for line in intact_infer)


def test_bench_survives_dropped_bytes(run, tmp_path):
    y, pred = _split(run)
    with Emulator(run, 3, drop=0.003, seed=4) as emu:
        res = bench_device(emu.port_path, run, 3, timeout=2)
    assert [s["pred"] for s in res.samples] == pred.tolist()
    intact = _intact_sample_lines(emu)
    for s in res.samples:
        if s["source"] == "run":
            assert P.format_sample(s["index"], s["pred"], s["label"], s["micros"]) in intact


def test_bench_default_run_and_device_from_banner(run, tmp_path, monkeypatch):
    monkeypatch.chdir(run.parent.parent)                    # has runs/r1/report.json
    with Emulator(run, 3) as emu:
        r = _invoke(["--port", emu.port_path, "--timeout", "3"])
    assert r.exit_code == 0, r.output + r.stderr
    written = list((run / "bench").glob("dev03_*.json"))    # default --out: RUN/bench/
    assert written and json.loads(written[0].read_text())["run_dir"] == str(Path("runs") / "r1")
    shutil.rmtree(run / "bench")


def test_bench_several_boards_one_table(run, tmp_path):
    out = tmp_path / "out"
    b = Emulator(run, 3, board="emuB", corrupt=0.05, seed=2)
    # emuB: flashed from a device.json whose threshold came from elsewhere (same model bytes)
    origin = b.threshold_origin
    b.threshold_origin = next(o for o in P.THRESHOLD_ORIGINS if o != origin)
    with Emulator(run, 3, board="emuA") as a, b:
        r = _invoke(["--ports", f"{a.port_path},{b.port_path}", "--run", str(run), "--out", str(out),
                     "--timeout", "3"])
    assert r.exit_code == 0, r.output + r.stderr
    assert "emuA" in r.output and "emuB" in r.output
    summary = json.loads((out / "summary.json").read_text())
    assert [s["status"] for s in summary] == ["ok", "ok"]
    # the board-reported origin, and a mismatch with the run's device.json flagged (a warning)
    assert [(s["threshold_origin"], s["threshold_origin_ok"]) for s in summary] == [
        (origin, True), (b.threshold_origin, False)]
    assert f"({b.threshold_origin}!)" in r.output and f"({origin})" in r.output
    assert f"device threshold origin {b.threshold_origin} differs from the run's {origin}" in r.stderr
    assert len(list(out.glob("dev03_*.json"))) == 2 and (out / "summary.csv").is_file()


# --------------------------------------------------------------------------- bad input: exit 2

def _other_model_run(run: Path, tmp_path: Path) -> Path:
    """A consistent copy of the run whose model bytes (hence hash) differ."""
    other = tmp_path / "other"
    shutil.copytree(run, other)
    d = other / "devices" / "dev03"
    data = (d / "model_int8.tflite").read_bytes() + b"\0" * 8
    (d / "model_int8.tflite").write_bytes(data)
    info = json.loads((d / "device.json").read_text())
    info["model_sha256"] = hashlib.sha256(data).hexdigest()
    (d / "device.json").write_text(json.dumps(info))
    return other


@pytest.mark.parametrize("case", ["missing_port", "silent", "other_version", "hash_differs", "disconnect"])
def test_bad_input_exits_2_with_one_line_and_no_files(case, run, tmp_path):
    out = tmp_path / "out"
    base = ["--run", str(run), "--device", "3", "--out", str(out), "--reconnect-wait", "0.5",
            "--timeout", "0.5" if case == "silent" else "3"]
    fds = []
    emu = None
    try:
        if case == "missing_port":
            port, expect = "/dev/ttyFEDTINY-NOPE", "does not exist"
        elif case == "silent":
            master, slave = os.openpty()
            fds = [master, slave]
            port, expect = os.ttyname(slave), "silent"
        elif case == "other_version":
            emu = Emulator(run, 3, protocol_version=2).start()     # a board flashed before live mode
            port, expect = emu.port_path, "device speaks protocol v2, this host speaks v3"
        elif case == "hash_differs":
            emu = Emulator(_other_model_run(run, tmp_path), 3).start()
            port, expect = emu.port_path, "model hash differs"
        else:
            emu = Emulator(run, 3, disconnect_after=8).start()
            port, expect = emu.port_path, "disconnected"
        r = _invoke(["--port", port, *base])
    finally:
        if emu:
            emu.stop()
        for fd in fds:
            os.close(fd)
    assert r.exit_code == 2, r.output + r.stderr
    err = r.stderr.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and expect in err[0], r.stderr
    assert "Traceback" not in r.output + r.stderr
    assert not out.exists() or not any(out.iterdir())


def test_bench_device_api_errors(run):
    with pytest.raises(BenchError, match="no device 7"):
        bench_device("/dev/null", run, 7)
    with pytest.raises(BenchError, match="--stream needs a run"):
        bench_device("/dev/null", None, None, stream=3)


# --------------------------------------------------------------------------- `fedtiny emulate`

def test_fedtiny_emulate_command_serves_a_pty(run):
    cmd = [sys.executable, "-c", "from fedtiny.cli import main; main()", "emulate", "--run", str(run),
           "--device", "3"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        port = proc.stdout.readline().strip()
        assert port.startswith("/dev/"), port
        assert "clock=host" in proc.stdout.readline()
        res = bench_device(port, run, 3, timeout=3)
        assert res.clock == "host" and res.ok and res.n == 24
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=120)             # hang guard only
        except subprocess.TimeoutExpired:
            proc.kill()
    assert proc.returncode == 0


def test_bench_emulated_api_for_demo(run, tmp_path):
    from fedtiny.bench import bench_emulated

    seen = []
    res, paths = bench_emulated(run, 3, out_dir=tmp_path / "b", stream=2,
                                progress=lambda stage, done, total: seen.append(stage))
    y, pred = _split(run)
    assert res.ok and res.clock == "host" and res.accuracy == pytest.approx(float(np.mean(pred == y)))
    assert sorted(p.suffix for p in paths) == [".csv", ".json"] and all(p.is_file() for p in paths)
    assert {"handshake", "run", "stream"} <= set(seen)


def test_without_a_run_lost_samples_are_a_clear_error(run):
    """No run to re-request from and a single pass: missing samples are reported, not guessed."""
    with Emulator(run, 3, corrupt=0.3, seed=5) as emu:
        with pytest.raises(BenchError, match=r"samples [0-9,.]+ never arrived intact after 1 'run' passes"):
            bench_device(emu.port_path, None, None, timeout=2, passes=1)
        res = bench_device(emu.port_path, None, None, timeout=2, passes=10)   # more passes: complete
    y, pred = _split(run)
    assert [s["pred"] for s in res.samples] == pred.tolist() and res.expected_accuracy is None
    assert {s["source"] for s in res.samples} == {"run"}


@pytest.mark.parametrize("stall_after", [9, 10, 11])
def test_a_late_ready_never_shifts_answers_to_the_next_window(run, stall_after):
    """A stall between an 'infer' answer and its 'ready' makes the ready late; the host must not take
    it for the next command's (lost) answer, or every later window gets the previous one's scores."""
    with Emulator(run, 3, n_test=4, stall=1.5, stall_after=stall_after) as emu:
        res = bench_device(emu.port_path, run, 3, stream=6, timeout=3)
    assert emu._stalled
    assert res.ok and res.stream["max_score_lsb_diff"] == 0   # every window got its own answer


def test_one_boards_unexpected_failure_keeps_the_others(run, monkeypatch):
    from fedtiny.bench import host

    real = host.bench_device

    def flaky(port, *a, **k):
        if port == "boom":
            raise RuntimeError("driver exploded")
        return real(port, *a, **k)

    monkeypatch.setattr(host, "bench_device", flaky)
    with Emulator(run, 3) as emu:
        items = host.bench_ports([emu.port_path, "boom"], run, 3, timeout=3)
    assert items[0].ok
    assert isinstance(items[1], BenchError) and "driver exploded" in str(items[1])


def test_bench_errors_are_user_errors_for_every_command():
    from fedtiny.errors import _user_error_types

    assert BenchError in _user_error_types()      # e.g. fedtiny demo's bench: one line, exit 2


def test_unwritable_results_folder_is_a_clear_error(run, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with Emulator(run, 3) as emu:
        r = _invoke(["--port", emu.port_path, "--run", str(run), "--device", "3",
                     "--out", str(blocker / "out"), "--timeout", "3"])
    assert r.exit_code == 2, r.output
    assert "cannot write the results" in r.stderr and "Traceback" not in r.output + r.stderr
