"""The inference-time estimate of a live build for the PlatformIO boards (nano33ble, esp32dev):
the same front end + model as compiled-runtime C, built for qemu-m4 and run by the probe on QEMU,
converted to microseconds with the board file's ``timing`` section (``codegen.timing``); a build
whose estimate exceeds the hop is refused with one error line and writes nothing."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

needs_probe = pytest.mark.skipif(shutil.which("arm-none-eabi-gcc") is None or shutil.which("qemu-system-arm") is None,
                                 reason="the estimate runs the probe: needs arm-none-eabi-gcc and qemu-system-arm")


def _manifest(project: Path) -> dict:
    return json.loads((project / "fedtiny_build.json").read_text())


def _cli(*args: str):
    from click.testing import CliRunner

    from fedtiny.cli import main

    r = CliRunner().invoke(main, ["build", "--device", "0", "--input", "sensor", *args])
    return r.exit_code, r.output.strip().splitlines()


def test_estimate_is_the_formula_of_the_timing_section():
    """< 0.1 s: microseconds = ceil((fe * f[compiled] + model * f[runtime]) * cpi / MHz); the worst
    window counts; the built-in boards' sections are valid; a malformed one is an error."""
    from types import SimpleNamespace

    from fedtiny.codegen.boards import Board, load_board
    from fedtiny.codegen.errors import CodegenError
    from fedtiny.codegen.timing import Timing, board_timing, estimate_us, worst_estimate_us

    assert estimate_us(100, 200, 2.5, 64, 1.3, 2.0) == 21          # (130 + 400) * 2.5 / 64 = 20.7
    assert estimate_us(0, 64_000, 1.0, 64) == 1000                 # exact: not rounded up
    assert estimate_us(1, 0, 1.0, 64) == 1
    t = Timing(64.0, 2.0, {"compiled": 1.0, "tflm": 3.0}, "test")
    ws = [SimpleNamespace(frontend_instructions=6400, model_instructions=0),
          SimpleNamespace(frontend_instructions=0, model_instructions=3200)]
    assert worst_estimate_us(ws, t, "compiled") == 200              # the first window
    assert worst_estimate_us(ws, t, "tflm") == 300                  # the model is the tflm runtime's
    for name in ("nano33ble", "esp32dev"):
        b = load_board(name)
        bt = board_timing(b)
        assert bt.clock_mhz == b.data["clock_mhz"] and set(bt.runtime_factor) == {"compiled", "tflm"} and bt.why
    assert board_timing(load_board("qemu-m4")) is None               # measured there, never estimated
    b = load_board("esp32dev")
    bad = Board({**b.data, "timing": {**b.data["timing"], "cycles_per_instruction": -1}}, b.path)
    with pytest.raises(CodegenError, match="must be positive"):
        board_timing(bad)


@needs_probe
def test_esp32_build_records_the_estimate_and_a_tiny_hop_is_refused(small_run, tmp_path):
    """~8 s (three probes on QEMU): an esp32dev --runtime compiled --input sensor build records the
    instructions qemu-m4's own live build measures and their conversion, and fits hop 20; hop 1
    (500 us at 2000 Hz) is refused with one error line and leaves the previous project intact."""
    from fedtiny.codegen.build import build_project
    from fedtiny.codegen.boards import load_board
    from fedtiny.codegen.timing import board_timing, estimate_us

    res = build_project(small_run, 0, "esp32dev", tmp_path / "fw", test_samples=1, compile=False,
                        runtime="compiled", input="sensor", hop=20)
    live = _manifest(res.project_dir)["live"]
    t = board_timing(load_board("esp32dev"))
    f = t.runtime_factor["compiled"]
    assert live["estimated_instructions"] > 0
    assert live["estimated_us"] == estimate_us(live["estimated_instructions"], 0, t.cycles_per_instruction,
                                               t.clock_mhz, f, f)
    assert live["estimated_us"] <= live["budget"] == 10_000
    assert "estimated, not measured" in live["time_estimate"] and res.time_estimate == live["time_estimate"]
    # the same C, front end and model, as qemu-m4's live build measures before it is swapped in
    q = build_project(small_run, 0, "qemu-m4", tmp_path / "q", test_samples=1, input="sensor", sensor="user", hop=20)
    assert _manifest(q.project_dir)["live"]["measured_instructions"] == live["estimated_instructions"]

    before = (res.project_dir / "fedtiny_build.json").read_text()
    code, lines = _cli("--run", str(small_run), "--board", "esp32dev", "--runtime", "compiled", "--hop", "1",
                       "--test-samples", "1", "--out", str(tmp_path / "fw"))
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error: inference takes "), lines
    assert "(estimated, not measured" in lines[0]
    assert "but a hop of 1 samples at 2000 Hz lasts 500 us: use a larger --hop or a smaller model" in lines[0]
    assert lines[0].endswith("(or, if the board runs it faster, give the time it measured with --inference-us)")
    assert (res.project_dir / "fedtiny_build.json").read_text() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fw", "q"]          # no temporary folder left


@pytest.fixture(scope="module")
def slow_run(small_run, tmp_path_factory) -> Path:
    """The small electrical run with device 0 relabelled as a 100 Hz model (a rate the Nano's IMU gives)."""
    run = tmp_path_factory.mktemp("slow_run") / "run"
    shutil.copytree(small_run, run, ignore=shutil.ignore_patterns("firmware"))
    d = run / "devices" / "dev00" / "device.json"
    info = json.loads(d.read_text())
    info["frontend"] = {**info["frontend"], "rate_hz": 100.0}
    info["channel_scale"] = [2.0, 2.0, 2.0, 500.0, 500.0, 500.0]
    d.write_text(json.dumps(info))
    return run


@needs_probe
def test_nano_tflm_build_estimates_with_the_interpreter_factor_and_refuses_a_tiny_hop(slow_run, tmp_path):
    """~6 s (two probes): the Nano TFLM sketch reading its IMU at 100 Hz records an estimate whose model
    part takes the board's tflm factor; hop 1 (10 ms) is refused and nothing is written."""
    from fedtiny.codegen.build import build_project
    from fedtiny.codegen.boards import load_board
    from fedtiny.codegen.timing import board_timing

    res = build_project(slow_run, 0, "nano33ble", tmp_path / "fw", test_samples=1, compile=False, input="sensor",
                        hop=20, board_revision="rev2")
    live = _manifest(res.project_dir)["live"]
    t = board_timing(load_board("nano33ble"))
    f_c = t.runtime_factor["compiled"]
    compiled_only = live["estimated_instructions"] * f_c * t.cycles_per_instruction / t.clock_mhz
    assert t.runtime_factor["tflm"] > f_c and compiled_only < live["estimated_us"] < live["budget"] == 200_000
    assert "(model, tflm)" in live["time_estimate"] and "at 64 MHz" in live["time_estimate"]

    code, lines = _cli("--run", str(slow_run), "--board", "nano33ble", "--board-revision", "rev2", "--hop", "1",
                       "--test-samples", "1", "--out", str(tmp_path / "new"))
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error: inference takes "), lines
    assert "estimated, not measured" in lines[0] and "lasts 10,000 us: use a larger --hop" in lines[0]
    assert not (tmp_path / "new").exists()


def test_without_qemu_or_a_timing_section_the_build_says_it_did_not_estimate(small_run, tmp_path, monkeypatch):
    """< 1 s (no probe): qemu-system-arm missing, or a board file without ``timing``: the build
    proceeds and its manifest, hint and printout say the time was not estimated and why."""
    from fedtiny.codegen import armgcc
    from fedtiny.codegen.build import build_project
    from fedtiny.codegen.boards import load_board

    real = armgcc.find_tool
    monkeypatch.setattr(armgcc, "find_tool", lambda name: None if name == "qemu-system-arm" else real(name))
    res = build_project(small_run, 0, "esp32dev", tmp_path / "a", test_samples=1, compile=False,
                        runtime="compiled", input="sensor", hop=1)
    live = _manifest(res.project_dir)["live"]
    assert live["estimated_us"] is None and live["estimated_instructions"] is None
    assert live["time_estimate"] == "not estimated: qemu-system-arm not installed (apt-get install gcc-arm-none-eabi " \
                                    "libnewlib-arm-none-eabi qemu-system-arm)"
    assert res.compile_hint.endswith("; inference time " + live["time_estimate"])
    monkeypatch.undo()

    data = dict(load_board("esp32dev").data)
    data.pop("timing")
    (tmp_path / "mine.json").write_text(json.dumps(data))
    code, lines = _cli("--run", str(small_run), "--board", str(tmp_path / "mine.json"), "--runtime", "compiled",
                       "--hop", "1", "--test-samples", "1", "--out", str(tmp_path / "b"))
    assert code == 0, lines
    assert "  inference    not estimated: board file mine.json has no timing section" in lines
    assert _manifest(tmp_path / "b")["live"]["time_estimate"] == "not estimated: board file mine.json has no timing section"


def test_a_time_measured_on_the_board_replaces_the_estimate(small_run, tmp_path):
    """< 2 s (no probe): the ESP32 TFLM sketch at 2000 Hz, whose estimate (about 12.5 ms) exceeds hop 20
    (10 ms), builds with the time the user measured on the board (--inference-us), recorded as
    measured; a measured time over the hop is refused and writes nothing; the option is an error
    where there is no estimate to replace (qemu-m4 measures, --input windows has no hop) or when it
    is not a positive number of microseconds."""
    common = ("--run", str(small_run), "--board", "esp32dev", "--hop", "20",
              "--test-samples", "1", "--no-compile")
    code, lines = _cli(*common, "--inference-us", "9000", "--out", str(tmp_path / "fits"))
    assert code == 0, lines
    live = _manifest(tmp_path / "fits")["live"]
    assert live["measured_us"] == 9000 and live["estimated_us"] is None and live["estimated_instructions"] is None
    assert live["budget"] == 10_000
    assert "  inference    9,000 us (measured on the board, given with --inference-us; not estimated)" in lines
    assert not any("inference time" in line for line in lines), lines     # the compile hint has nothing to add

    code, lines = _cli(*common, "--inference-us", "10001", "--out", str(tmp_path / "over"))
    assert code == 2 and lines == ["error: inference takes 10,001 us (measured on the board, given with "
                                   "--inference-us; not estimated) but a hop of 20 samples at 2000 Hz lasts "
                                   "10,000 us: use a larger --hop or a smaller model"], lines
    assert not (tmp_path / "over").exists()

    for extra, says in [(("--board", "qemu-m4", "--inference-us", "9000"), "qemu-m4 measures the inference time itself"),
                        (("--input", "windows", "--inference-us", "9000"), "--inference-us needs --input sensor"),
                        (("--inference-us", "0"), "--inference-us must be a positive whole number of microseconds"),
                        (("--inference-us", "-5"), "--inference-us must be a positive whole number of microseconds")]:
        code, lines = _cli(*common, *extra, "--out", str(tmp_path / "bad"))
        assert code == 2 and len(lines) == 1 and lines[0].startswith("error: ") and says in lines[0], (extra, lines)
        assert not (tmp_path / "bad").exists()
