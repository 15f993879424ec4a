"""What a new user meets first: failed runs that do not block the corrected rerun, one-line errors for
unwritable folders and bad options, consistent option ranges, quiet TensorFlow, unwrapped lines,
resume messages and evaluation warnings."""
from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest
from click.testing import CliRunner

from fedtiny.cli import main


def _run(args):
    return CliRunner().invoke(main, args)


def _one_error_line(res, code=2):
    assert res.exit_code == code, res.output
    assert "Traceback" not in res.output
    errs = [ln for ln in res.output.splitlines() if ln.startswith("error:")]
    assert len(errs) == 1, res.output
    assert not any(ln.startswith(("Usage:", "Error:", "Try ")) for ln in res.output.splitlines()), res.output
    return errs[0]


# --- a failed train leaves nothing that blocks the corrected rerun --------------------------
def test_failed_train_writes_nothing(tmp_path):
    out = tmp_path / "r"
    res = _run(["train", "--dataset", str(tmp_path / "typo.csv"), "--out", str(out)])
    _one_error_line(res)
    assert not (out / "config.json").exists()


def test_directory_without_a_finished_step_is_free(tmp_path):
    from fedtiny.trainer.config import TrainConfig
    from fedtiny.trainer.pipeline import Run, RunError

    out = tmp_path / "r"
    out.mkdir()
    (out / "config.json").write_text(json.dumps(TrainConfig(dataset="typo.csv").to_dict()))
    (out / "metrics.jsonl").write_text("")
    run = Run(TrainConfig(), out)                 # another config, no step done: accepted
    assert run.progress["done"] == []
    assert json.loads((out / "config.json").read_text())["dataset"] == "typo.csv"   # nothing written yet
    (out / "state").mkdir()
    (out / "state" / "progress.json").write_text(json.dumps(
        {"done": ["phase0"], "metrics_lines": 0, "weights": None, "timings": {}}))
    with pytest.raises(RunError, match="different config"):
        Run(TrainConfig(), out)


# --- unwritable output folders --------------------------------------------------------------
def test_unwritable_train_out_is_one_line_before_any_work(tmp_path):
    (tmp_path / "file").write_text("x")
    res = _run(["train", "--out", str(tmp_path / "file" / "run")])
    line = _one_error_line(res)
    assert "is a file" in line
    assert "preparing data" not in res.output


def test_unwritable_build_and_report_out(tmp_path):
    from runfixture import make_run_dir

    run = make_run_dir(tmp_path / "run", device=0)
    (tmp_path / "file").write_text("x")
    _one_error_line(_run(["build", "--run", str(run), "--device", "0", "--out", str(tmp_path / "file" / "p")]))
    (run / "bench").mkdir()
    _one_error_line(_run(["report", str(run), "--out", str(tmp_path / "file" / "r.html")]))
    assert not list((tmp_path).glob("**/.*.tmp"))


# --- option errors are one line -------------------------------------------------------------
@pytest.mark.parametrize("args", [["train", "--devices", "0"], ["train", "--bogus"], ["compare", "--seeds", "x"],
                                  ["demo", "--seed", "-1"], ["ablate", "--out", "o", "--floor", "-1"]])
def test_option_errors_are_one_line(args):
    line = _one_error_line(_run(args))
    assert "--help" in line


def test_one_seed_table_shows_na():
    from fedtiny.experiments import markdown_table, mean_std

    assert mean_std([0.8])[1] is None
    res = {"variants": {"a": {"runs": [{"seed": 0, "devices": [], "warnings": [], "class_names": []}],
                              "float_mean": 0.8, "float_std": None, "int8_mean": 0.79, "int8_std": None,
                              "per_device_float": {"0": 0.8}, "per_device_int8": {"0": 0.79}}},
           "failed": [{"variant": "b", "seed": 1, "run_dir": "x", "error": "device 0 has no windows"}]}
    table = markdown_table(res, "t")
    assert "80.00 ± n/a" in table and "± 0.00" not in table
    assert "| b | 1 | device 0 has no windows |" in table


# --- help and ranges --------------------------------------------------------------------------
def _params(cmd_name):
    cmd = main.get_command(None, cmd_name)
    return {p.name: p for p in cmd.params}


def test_every_option_has_help_and_ranges_agree():
    for name in ("train", "compare", "ablate", "demo"):
        params = _params(name)
        for p in params.values():
            if isinstance(p, __import__("click").Option) and p.name != "help":
                assert p.help, f"{name} --{p.name} has no help"
        dev = params["devices"].type
        assert (dev.min, dev.max) == (1, 1000), name
    for name in ("floor", "mu"):
        assert _params("train")[name].type.min == 0
    assert _params("train")["seed"].type.min == 0


def test_resume_of_a_finished_run_says_so(small_run):
    from conftest import small_config

    from fedtiny.trainer.pipeline import Reporter, train

    notes = []

    class Rec(Reporter):
        def note(self, text):
            notes.append(text)

    before = (small_run / "report.json").read_text()
    rep = train(small_config(), small_run, resume=True, reporter=Rec())
    assert any("already finished" in n for n in notes), notes
    assert rep == json.loads(before)


def test_describe_step():
    from fedtiny.trainer.pipeline import describe_step

    assert describe_step("round05") == "round 5"
    assert describe_step("dev03").startswith("device 3")
    assert describe_step("phase0") == "Phase 0"


# --- TensorFlow start-up noise ------------------------------------------------------------------
def test_noise_filter_keeps_real_messages():
    from fedtiny.trainer.tfquiet import filter_noise

    text = ("WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\n"
            "I0000 00:00:1796116348.229932    6308 port.cc:153] oneDNN custom operations are on. You may see\n"
            "a real error\n")
    assert filter_noise(text) == "a real error\n"


def test_tensorflow_import_is_quiet(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("TF_CPP_MIN_LOG_LEVEL", "FEDTINY_VERBOSE")}
    code = "from fedtiny.trainer.tfquiet import import_tensorflow; import_tensorflow()"
    quiet = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert quiet.returncode == 0, quiet.stderr
    assert "absl" not in quiet.stderr and "oneDNN" not in quiet.stderr, quiet.stderr
    loud = subprocess.run([sys.executable, "-c", code], env={**env, "FEDTINY_VERBOSE": "1"},
                          capture_output=True, text=True, timeout=300)
    assert "oneDNN" in loud.stderr or "absl" in loud.stderr     # shown with --verbose


# --- plain lines never wrap ---------------------------------------------------------------------
def test_plain_lines_do_not_wrap():
    from rich.console import Console

    from fedtiny.progress import print_line

    buf = io.StringIO()
    con = Console(file=buf, width=40, force_terminal=False)
    line = "bench of device 3 through the emulator (/dev/pts/12): accuracy 83.8%, decision mismatches 0 [x]"
    print_line(con, line)
    assert buf.getvalue() == line + "\n"


# --- what cannot be evaluated ------------------------------------------------------------
def test_evaluation_gap_rules():
    from fedtiny.trainer.pipeline import missing_test_classes, one_sided

    assert one_sided(np.array([0, 0])) == "normal"
    assert one_sided(np.array([2, 1])) == "fault"
    assert one_sided(np.array([0, 3])) is None
    assert missing_test_classes(np.array([0, 1, 2, 2]), np.array([0, 2])) == [1]
    assert missing_test_classes(np.array([0, 1]), np.array([0, 1, 3])) == []


def test_report_carries_class_counts_and_warnings(small_run):
    rep = json.loads((small_run / "report.json").read_text())
    assert isinstance(rep["warnings"], list)
    for d in rep["devices"]:
        assert len(d["test_class_counts"]) == len(rep["class_names"])
        assert sum(d["test_class_counts"]) == d["n_test"]


# --- Ctrl-C stops compare at once, and a rerun continues ------------------------------------------
def test_compare_stops_on_sigint_and_rerun_continues(tmp_path):
    import signal
    import time

    out = tmp_path / "cmp"
    args = [sys.executable, "-c", "from fedtiny.cli import run; run()", "compare", "--devices", "1",
            "--rounds", "0", "--seeds", "0", "--out", str(out)]
    log = open(tmp_path / "log", "w+")
    # started as a shell starts a background job: SIGINT ignored; fedtiny must re-arm it
    proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))
    try:
        deadline = time.monotonic() + 240
        while not re.search(r"run 2/\d+:", (tmp_path / "log").read_text()):
            assert proc.poll() is None and time.monotonic() < deadline, (tmp_path / "log").read_text()
            time.sleep(0.2)
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=300)      # a hang guard only: load must not decide the test
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    text = (tmp_path / "log").read_text()
    assert proc.returncode == 130, text
    # stopped inside run 2 rather than finishing it: no report of run 2, and no later run started
    runs = sorted(p.name for p in (out / "runs").iterdir() if (p / "report.json").exists())
    assert runs == ["fedmetaalign-s0"], runs
    assert [ln for ln in text.splitlines() if ln.startswith("error:")] == [
        "error: interrupted; finished steps are kept: run the same command again to continue (for train, add --resume)"]
    assert "leaked" not in text and "Traceback" not in text
    first = out / "runs" / "fedmetaalign-s0" / "report.json"
    assert first.exists()
    mtime = first.stat().st_mtime_ns
    from fedtiny.experiments import run_variants   # the rerun reuses the finished run
    from fedtiny.trainer.config import TrainConfig

    res = run_variants(TrainConfig(devices=1, rounds=0), {"fedmetaalign": {"method": "fedmetaalign"}}, [0], out)
    assert first.stat().st_mtime_ns == mtime and not res["failed"]
