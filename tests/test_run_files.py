"""The run directory's files: strict JSON everywhere, crash-safe concurrent writes, one lock per
run directory, a checked metrics log on --resume, and one clear error for a damaged file."""
from __future__ import annotations

import json
import threading
from pathlib import Path

import numpy as np
import pytest

from conftest import small_config


def _refuse(name):
    raise ValueError(f"{name} is not JSON")


def strict(text: str):
    return json.loads(text, parse_constant=_refuse)


# ---------------------------------------------------------------- strict JSON

def test_metrics_line_writes_null_and_says_why_for_an_empty_phase1_share(tmp_path):
    """The Phase-1 tour over sites whose Phase-1 share is empty (a site then replies as
    ``SiteClient.fit`` does: weights unchanged, metrics {"n": 0}, no loss) and over a site whose
    reply is unusable: each visit's loss is null, not a bare NaN, and the line names the value
    and why it is missing. The server's tour code runs as is; the sites are stand-ins (no TF)."""
    from fedtiny.trainer.pipeline import Reporter, Run
    from fedtiny.trainer.rundir import Metrics
    from fedtiny.trainer.strategies import Reply

    class Sites:
        def fit(self, tasks):
            t = tasks[0]
            if t.device == 1:
                return [Reply(t.device, error="site error: boom")]
            return [Reply(t.device, [np.array(w) for w in t.weights], {"n": 0})]

    run = Run(small_config(devices=3), tmp_path / "run")
    run.metrics = Metrics(tmp_path / "metrics.jsonl")
    run.global_weights, run.backend, run.rep = [np.zeros(3, np.float32)], Sites(), Reporter()
    run._phase1()
    visits = [strict(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [m["device"] for m in visits] == [0, 1, 2]
    assert all(m["loss"] is None for m in visits)
    assert "empty Phase-1 share" in visits[0]["not_finite"]["loss"]
    assert "unusable" in visits[1]["not_finite"]["loss"] and visits[1]["failed"] == "site error: boom"


def test_strict_json_writers_name_non_finite_values(tmp_path):
    from fedtiny.trainer.rundir import Metrics, atomic_write_json, dumps_strict, loads_strict

    rec = {"a": 1.5, "b": float("nan"), "c": [1.0, float("inf")], "d": {"e": np.float32("-inf")}}
    back = strict(dumps_strict(rec, why={"b": "nothing to measure"}))
    assert back["a"] == 1.5 and back["b"] is None and back["c"] == [1.0, None] and back["d"] == {"e": None}
    assert back["not_finite"] == {"b": "nan: nothing to measure", "c[1]": "inf: not a finite number",
                                  "d.e": "-inf: not a finite number"}
    m = Metrics(tmp_path / "m.jsonl")
    m.log({"loss": float("nan")}, why={"loss": "empty"})
    atomic_write_json(tmp_path / "x.json", {"acc": float("nan")})
    assert strict((tmp_path / "m.jsonl").read_text())["not_finite"] == {"loss": "nan: empty"}
    assert strict((tmp_path / "x.json").read_text())["acc"] is None
    with pytest.raises(ValueError):
        loads_strict('{"loss": NaN}')
    # a site's metrics cross the wire as strict JSON (messages.reply_content); the server refuses
    # the value that arrives as null, as it refuses a NaN in-process
    from fedtiny.trainer.strategies import Reply, check_reply

    wire = loads_strict(dumps_strict({"n": 3, "acc": float("nan")}))
    assert "not finite" in check_reply(Reply(0, None, wire), None)
    assert "not finite" in check_reply(Reply(0, None, {"n": 3, "acc": float("nan")}), None)


def test_every_json_file_of_a_run_is_strict(small_run):
    files = [p for p in Path(small_run).rglob("*") if p.suffix in (".json", ".jsonl")]
    assert any(p.name == "metrics.jsonl" for p in files) and any(p.name == "device.json" for p in files)
    for p in files:
        for line in (p.read_text().splitlines() if p.suffix == ".jsonl" else [p.read_text()]):
            strict(line)


# ---------------------------------------------------------------- concurrent writers

def test_concurrent_atomic_writes_of_one_file_never_fail_or_tear(tmp_path):
    """Sites of a Flower simulation and the server write the same run files at once (config.json
    when a run resumes): every writer has its own temporary file, so no writer's rename fails and a
    reader always sees one whole version."""
    from fedtiny.trainer.rundir import atomic_write_json, loads_strict, write_if_changed

    path = tmp_path / "config.json"
    errors, seen = [], set()
    stop = threading.Event()

    def writer(k):
        try:
            for i in range(80):
                atomic_write_json(path, {"writer": k, "i": i, "pad": "x" * 2000})
                write_if_changed(path, {"writer": k, "i": i, "pad": "x" * 2000})
        except Exception as e:  # noqa: BLE001 - the assertion below names it
            errors.append(repr(e))

    def reader():
        while not stop.is_set():
            try:
                seen.add(loads_strict(path.read_bytes())["writer"])
            except FileNotFoundError:
                pass
            except ValueError as e:
                errors.append(f"torn read: {e}")

    threads = [threading.Thread(target=writer, args=(k,)) for k in range(6)]
    r = threading.Thread(target=reader)
    r.start()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    stop.set()
    r.join()
    assert errors == []
    assert loads_strict(path.read_bytes())["i"] == 79
    assert [p.name for p in tmp_path.iterdir()] == ["config.json"]          # no temporary file left


# ---------------------------------------------------------------- damaged run files

@pytest.fixture(scope="module")
def toy_run(tmp_path_factory):
    """A small run directory (tests/runfixture.py) with one device, 3."""
    from runfixture import make_run_dir

    return make_run_dir(tmp_path_factory.mktemp("toy") / "run", device=3, n_test=8)


def _damaged_copy(toy_run, tmp_path, rel: str, damage) -> Path:
    import shutil

    run = tmp_path / "run"
    shutil.copytree(toy_run, run)
    damage(run / rel)
    return run


def _truncate(p: Path) -> None:
    p.write_bytes(p.read_bytes()[: len(p.read_bytes()) // 2])


def _one_error_line(res, *words) -> None:
    out = res.output
    assert res.exit_code == 2, out
    assert "Traceback" not in out and not isinstance(res.exception, (KeyError, ValueError, EOFError)), out
    lines = [x for x in out.splitlines() if x.strip()]
    assert len([x for x in lines if x.startswith("error:")]) == 1, out
    err = next(x for x in lines if x.startswith("error:"))
    for w in words:
        assert w in err, err


@pytest.mark.parametrize("command", [
    ["build", "--device", "3", "--board", "qemu-m4", "--no-compile"],
    ["emulate", "--device", "3"],
    ["bench", "--port", "/dev/null-none"],
])
def test_truncated_test_split_gives_one_error_line(toy_run, tmp_path, command):
    from click.testing import CliRunner

    from fedtiny.cli import main

    run = _damaged_copy(toy_run, tmp_path, "devices/dev03/test_split.npz", _truncate)
    args = command + ["--run", str(run)] + (["--device", "3"] if command[0] == "bench" else [])
    if command[0] == "build":
        args += ["--out", str(tmp_path / "fw")]
    res = CliRunner().invoke(main, args)
    _one_error_line(res, "test_split.npz", "damaged")
    assert not (tmp_path / "fw").exists()


def test_emulate_on_an_unreadable_model_gives_one_error_line(toy_run, tmp_path):
    """A model file that tflite-micro cannot load (its hash recorded as the run's): one line."""
    import hashlib

    from click.testing import CliRunner

    from fedtiny.cli import main

    def garbage(p: Path) -> None:
        p.write_bytes(b"\x00" * 64)
        info = json.loads((p.parent / "device.json").read_text())
        info["model_sha256"] = hashlib.sha256(p.read_bytes()).hexdigest()
        (p.parent / "device.json").write_text(json.dumps(info))

    run = _damaged_copy(toy_run, tmp_path, "devices/dev03/model_int8.tflite", garbage)
    res = CliRunner().invoke(main, ["emulate", "--device", "3", "--run", str(run)])
    _one_error_line(res, "model_int8.tflite")


# ---------------------------------------------------------------- resume and the lock

def _unfinished_copy(small_run, tmp_path) -> tuple[Path, int]:
    """A copy of the finished small run whose last device step is not done (as if killed during
    it); returns (run, metrics lines the checkpoint covers)."""
    import shutil

    run = tmp_path / "run"
    shutil.copytree(small_run, run)
    prog = json.loads((run / "state" / "progress.json").read_text())
    prog["done"].remove("dev02")
    prog["metrics_lines"] -= 1
    (run / "state" / "progress.json").write_text(json.dumps(prog))
    (run / "report.json").unlink()
    return run, prog["metrics_lines"]


def test_metrics_log_checked_on_resume(tmp_path):
    from fedtiny.trainer.rundir import Metrics, RunFileError

    p = tmp_path / "metrics.jsonl"
    p.write_text('{"a": 1}\n{"a": 2}\n{"a": 3}\n{"a": ')          # a crash mid-write: 3 + a partial
    m = Metrics(p)
    assert m.check(3) and "unfinished last line" in m.check(3)[0]
    assert m.resume(2) and p.read_text() == '{"a": 1}\n{"a": 2}\n' and m.lines == 2
    p.write_text('{"a": 1}\n')                                      # cut: the checkpoint covers 2
    with pytest.raises(RunFileError, match="holds 1 complete lines but the last checkpoint covers 2"):
        Metrics(p).check(2)
    p.write_text('{"a": 1}\n{"a": \n{"a": 3}\n')                   # a broken line inside
    with pytest.raises(RunFileError, match="line 2 is broken"):
        Metrics(p).check(3)


def test_resume_refuses_a_cut_metrics_log_before_any_work(small_run, tmp_path):
    from fedtiny.trainer.pipeline import train

    run, n = _unfinished_copy(small_run, tmp_path)
    log = run / "metrics.jsonl"
    lines = log.read_text().splitlines(keepends=True)
    log.write_text("".join(lines[: n - 2]) + lines[n - 2][:10])          # rounds lost, a broken line kept
    before = log.read_bytes()
    with pytest.raises(ValueError, match="metrics.jsonl holds .* complete lines"):   # rundir.RunFileError
        train(small_config(), run, resume=True)
    assert log.read_bytes() == before and (run / "state" / "progress.json").exists()


def test_resume_on_a_truncated_report_gives_one_error_line(small_run, tmp_path):
    import shutil

    from fedtiny.trainer.pipeline import train

    run = tmp_path / "run"
    shutil.copytree(small_run, run)
    _truncate(run / "report.json")
    with pytest.raises(ValueError, match=r"report.json is damaged .*delete it and run the same command with --resume"):
        train(small_config(), run, resume=True)


def test_second_process_on_a_run_directory_gets_one_error_naming_the_holder(tmp_path):
    """While a process holds the run directory, train on it stops before writing anything, with
    one error line naming the holder."""
    import subprocess
    import sys

    from click.testing import CliRunner

    from fedtiny.cli import main

    out = tmp_path / "run"
    out.mkdir()
    holder = subprocess.Popen([sys.executable, "-c", (        # holds RUN/.lock as the contract says
        "import fcntl, os, sys; "
        f"fd = os.open({str(out / '.lock')!r}, os.O_RDWR | os.O_CREAT); fcntl.flock(fd, fcntl.LOCK_EX); "
        "os.write(fd, f'pid {os.getpid()} (holder)'.encode()); print('held', flush=True); sys.stdin.read()")],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        res = CliRunner().invoke(main, ["train", "--devices", "3", "--out", str(out)])
        _one_error_line(res, str(out), f"pid {holder.pid}", "in use")
        assert sorted(p.name for p in out.iterdir()) == [".lock"]
    finally:
        holder.stdin.close()
        holder.wait(timeout=60)
    from fedtiny.trainer.rundir import FolderLock

    FolderLock(out).acquire().release()           # the lock died with its holder (no stale lock)
    assert not (out / ".lock").exists()
