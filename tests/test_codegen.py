"""fedtiny build / flash: generated project contents, fit and op checks, CLI, PlatformIO driving.

The TFLM sketch itself cannot be compiled here (no Arduino cores or TFLM sources reachable); the
data translation units are compiled with the host g++ and read back byte for byte, and main.cpp is
pinned by a golden file.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

sys.path.insert(0, str(Path(__file__).resolve().parent))

from fedtiny.codegen import boards as boardsmod  # noqa: E402
from fedtiny.codegen import cli as cgcli  # noqa: E402
from fedtiny.codegen import pio as piomod  # noqa: E402
from fedtiny.codegen.build import build_project  # noqa: E402
from fedtiny.codegen.errors import CodegenError  # noqa: E402
from fedtiny.codegen.ops import OP_TABLE  # noqa: E402
from fedtiny.codegen.render import render_sketch, sketch_context  # noqa: E402
from fedtiny.codegen.tflite_model import read_model  # noqa: E402
from fedtiny.firmware.protocol import fault_q0_max  # noqa: E402

GOLDEN = Path(__file__).resolve().parent / "golden"
REPO = Path(__file__).resolve().parent.parent
CONV1D_OPS = ("RESHAPE", "CONV_2D", "AVERAGE_POOL_2D", "FULLY_CONNECTED", "SOFTMAX")


@pytest.fixture(scope="session")
def runs(tmp_path_factory):
    """Two real small runs: an electrical-like (40, 6) model and a mechanical-like (1024, 1) one."""
    from runfixture import make_run_dir

    root = tmp_path_factory.mktemp("cgruns")
    return {"small": make_run_dir(root / "small"),
            "long": make_run_dir(root / "long", input_shape=(1024, 1), n_classes=4, n_test=8, seed=1)}


@pytest.fixture
def no_platforms(tmp_path, monkeypatch):
    core = tmp_path / "pio-core"
    core.mkdir()
    monkeypatch.setenv("PLATFORMIO_CORE_DIR", str(core))
    return core


def _install_platform(core: Path, name: str, version: str) -> None:
    d = core / "platforms" / name
    d.mkdir(parents=True)
    (d / "platform.json").write_text(json.dumps({"name": name, "version": version}))


def _model(run: Path) -> bytes:
    return (run / "devices" / "dev03" / "model_int8.tflite").read_bytes()


# ----------------------------------------------------------------------------- model parsing

def test_parser_matches_litert_op_list(runs):
    from ai_edge_litert.interpreter import Interpreter

    for run in runs.values():
        model = _model(run)
        facts = read_model(model)
        ref = [d["op_name"] for d in Interpreter(model_content=model)._get_ops_details()]
        assert list(facts.op_sequence) == ref
        assert facts.ops == CONV1D_OPS
        info = json.loads((run / "devices" / "dev03" / "device.json").read_text())
        assert facts.input.dtype == facts.output.dtype == "int8"
        assert list(facts.input.shape[1:]) == info["input_shape"]
        assert facts.input.scale == pytest.approx(info["input_scale"], rel=1e-7)
        assert facts.output.zero_point == info["output_zero_point"]


def test_parser_rejects_non_tflite():
    with pytest.raises(CodegenError, match="not a TFLite flatbuffer"):
        read_model(b"not a model at all")


# ----------------------------------------------------------------------------- host C++ round trip

DUMP_CPP = r"""
#include <stdio.h>
#include "fedtiny_protocol.h"
#include "fedtiny_config.h"
#include "model_data.h"
#include "test_data.h"

int main(int argc, char** argv) {
  FILE* f = fopen(argv[1], "wb");
  fwrite(g_fedtiny_model, 1, g_fedtiny_model_len, f);
  fclose(f);
  f = fopen(argv[2], "wb");
  fwrite(g_fedtiny_test_x, 1, (size_t)FT_N_TEST * FT_TEST_WINDOW_BYTES, f);
  fclose(f);
  f = fopen(argv[3], "wb");
  fwrite(g_fedtiny_test_y, 1, FT_N_TEST, f);
  fclose(f);
  printf("model_align=%d\n", (int)(((unsigned long)g_fedtiny_model) % 16));
  printf("model_len=%u\n", g_fedtiny_model_len);
  printf("n_test=%d\n", FT_N_TEST);
  printf("device=%d\n", FT_DEVICE_ID);
  printf("board=%s\n", FT_BOARD);
  printf("hash=%s\n", FT_MODEL_SHA256);
  printf("threshold=%.9g\n", (double)FT_THRESHOLD);
  printf("q0_fault_max=%d\n", FT_Q0_FAULT_MAX);
  printf("input_scale=%.9g\n", (double)FT_INPUT_SCALE);
  printf("input_zero_point=%d\n", FT_INPUT_ZERO_POINT);
  printf("output_scale=%.9g\n", (double)FT_OUTPUT_SCALE);
  printf("output_zero_point=%d\n", FT_OUTPUT_ZERO_POINT);
  printf("input_bytes=%d\n", FT_INPUT_BYTES);
  printf("n_classes=%d\n", FT_N_CLASSES);
  printf("class0=%s\n", kFtClassNames[0]);
  printf("arena=%d\n", FT_ARENA_BYTES);
  printf("protocol=%d\n", FT_CONFIG_PROTOCOL_VERSION == FT_PROTOCOL_VERSION);
  return 0;
}
"""


@pytest.mark.skipif(shutil.which("g++") is None, reason="needs g++")
def test_data_units_compile_on_host_and_round_trip(runs, tmp_path, no_platforms):
    run = runs["small"]
    res = build_project(run, 3, "nano33ble", tmp_path / "proj", test_samples=10, compile=False)
    proj = res.project_dir
    (tmp_path / "dump.cpp").write_text(DUMP_CPP)
    exe = tmp_path / "dump"
    subprocess.run(["g++", "-std=c++11", "-Wall", "-Werror", "-Wno-unused-variable", "-I", str(proj / "include"),
                    str(tmp_path / "dump.cpp"), str(proj / "src" / "model_data.cpp"),
                    str(proj / "src" / "test_data.cpp"), "-o", str(exe)], check=True)
    out = subprocess.run([str(exe), str(tmp_path / "m.bin"), str(tmp_path / "x.bin"), str(tmp_path / "y.bin")],
                         check=True, capture_output=True, text=True).stdout
    cfg = dict(line.split("=", 1) for line in out.splitlines())

    model = _model(run)
    assert (tmp_path / "m.bin").read_bytes() == model
    with np.load(run / "devices" / "dev03" / "test_split.npz") as z:
        x, y = z["x_int8"][:10], z["y"][:10]
    assert (tmp_path / "x.bin").read_bytes() == x.astype(np.int8).tobytes()
    assert list((tmp_path / "y.bin").read_bytes()) == y.tolist()

    info = json.loads((run / "devices" / "dev03" / "device.json").read_text())
    assert cfg["model_align"] == "0"
    assert int(cfg["model_len"]) == len(model) == res.model_bytes
    assert int(cfg["n_test"]) == 10 == res.test_samples
    assert (int(cfg["device"]), cfg["board"]) == (3, "nano33ble")
    assert cfg["hash"] == info["model_sha256"]
    assert np.float32(float(cfg["threshold"])) == np.float32(info["threshold"])
    assert int(cfg["q0_fault_max"]) == fault_q0_max(info["threshold"], info["output_scale"], info["output_zero_point"])
    assert np.float32(float(cfg["input_scale"])) == np.float32(info["input_scale"])
    assert np.float32(float(cfg["output_scale"])) == np.float32(info["output_scale"])
    assert int(cfg["input_zero_point"]) == info["input_zero_point"]
    assert int(cfg["output_zero_point"]) == info["output_zero_point"]
    assert int(cfg["input_bytes"]) == 240 and int(cfg["n_classes"]) == 6 and cfg["class0"] == "normal"
    assert int(cfg["arena"]) == res.arena_bytes and res.arena_bytes % 16 == 0
    assert res.arena_bytes > info["arena_bytes"]  # host figure plus the stated margin
    assert cfg["protocol"] == "1"


# ----------------------------------------------------------------------------- sketch

def _resolver(sketch: str) -> tuple[int, list[str], list[str]]:
    n = int(re.search(r"constexpr unsigned int kOpCount = (\d+);", sketch).group(1))
    assert "MicroMutableOpResolver<kOpCount>" in sketch
    calls = re.findall(r"g_resolver\.(\w+)\(\) != kTfLiteOk\) return false;  // (\w+)", sketch)
    return n, [m for m, _ in calls], [op for _, op in calls]


def test_golden_sketch():
    """main.cpp for a FIXED context (op list, board); FEDTINY_UPDATE_GOLDEN=1 rewrites the file."""
    ops = [(op, OP_TABLE[op]) for op in CONV1D_OPS]
    for board in ("nano33ble", "esp32dev"):
        text = render_sketch(sketch_context(boardsmod.load_board(board), ops))
        path = GOLDEN / f"main_{board}.cpp"
        if os.environ.get("FEDTINY_UPDATE_GOLDEN") == "1":
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
        assert path.is_file(), f"missing golden {path}; run with FEDTINY_UPDATE_GOLDEN=1"
        assert text == path.read_text(), f"{path.name} changed; if intended, FEDTINY_UPDATE_GOLDEN=1"


def test_sketch_resolver_equals_model_ops_on_two_models(runs, tmp_path, no_platforms):
    for name, run in runs.items():
        for board in ("nano33ble", "esp32dev"):
            res = build_project(run, 3, board, tmp_path / f"{name}-{board}", compile=False)
            sketch = (res.project_dir / "src" / "main.cpp").read_text()
            n, methods, ops = _resolver(sketch)
            model_ops = list(read_model(_model(run)).ops)
            assert ops == model_ops and n == len(model_ops) == len(set(methods))
            assert methods == [OP_TABLE[o] for o in model_ops]
            assert "AddConv2D" in methods and "AddAveragePool2D" in methods  # Conv1D's converted form
            assert "AddMean" not in methods             # pooling that every TFLM library computes alike
            heap = "#define FT_ARENA_ON_HEAP 1" in (res.project_dir / "include" / "fedtiny_config.h").read_text()
            assert heap == (board == "esp32dev")


def test_sketch_speaks_the_protocol():
    text = (GOLDEN / "main_nano33ble.cpp").read_text()
    for needle in ("ft_format_banner", "ft_format_ready", "ft_format_error", "ft_format_sample",
                   "ft_format_summary", "ft_format_infer", "ft_parse_command_ex", "ft_line_feed",
                   "ft_decide_q(g_output->data.int8, FT_N_CLASSES, FT_Q0_FAULT_MAX)",
                   "ft_latency_summary", "arena_used_bytes()) + 16", "micros()",
                   "TFLITE_SCHEMA_VERSION", "tflite::GetModel", "NVIC_SystemReset();", "#include <TensorFlowLite.h>"):
        assert needle in text, needle
    assert "ESP.restart();" in (GOLDEN / "main_esp32dev.cpp").read_text()


# ----------------------------------------------------------------------------- fit and op checks

def _tiny_board(tmp_path: Path, **budget) -> Path:
    data = json.loads((boardsmod.boards_dir() / "nano33ble.json").read_text())
    data["name"] = "tinyboard"
    data["budget"].update(budget)
    path = tmp_path / "tinyboard.json"
    path.write_text(json.dumps(data))
    return path


def test_fit_check_names_every_number(runs, tmp_path, no_platforms):
    run = runs["small"]
    out = tmp_path / "proj"
    board = _tiny_board(tmp_path, ram_bytes=20000)
    with pytest.raises(CodegenError) as e:
        build_project(run, 3, str(board), out, compile=False, host_arena=4784)
    msg = str(e.value)
    assert "does not fit tinyboard RAM" in msg
    for num in ("arena 7,008 B", "sketch buffers", "runtime allowance 65,536 B", "RAM budget 20,000 B"):
        assert num in msg, msg
    assert not out.exists()  # nothing half-written

    board = _tiny_board(tmp_path, flash_bytes=300000)
    with pytest.raises(CodegenError) as e:
        build_project(run, 3, str(board), out, compile=False, host_arena=4784)
    msg = str(e.value)
    for num in (f"flash: model {len(_model(run)):,} B", "test data 241 B (1 windows)", "runtime allowance 307,200 B", "flash budget 300,000 B"):
        assert num in msg, msg


def test_test_samples_capped_by_flash_budget(runs, tmp_path, no_platforms):
    model_len = len(_model(runs["small"]))
    board = _tiny_board(tmp_path, flash_bytes=model_len + 307200 + 3 * 241 + 100)
    res = build_project(runs["small"], 3, str(board), tmp_path / "p", compile=False, host_arena=4784)
    assert res.test_samples == 3 and res.flash_used <= res.flash_budget


def test_op_outside_table_is_refused_by_name(runs, tmp_path, no_platforms):
    table = {k: v for k, v in OP_TABLE.items() if k != "AVERAGE_POOL_2D"}
    with pytest.raises(CodegenError, match=r"op\(s\) AVERAGE_POOL_2D that the TFLM resolver"):
        build_project(runs["long"], 3, "nano33ble", tmp_path / "p", compile=False, op_table=table)
    assert not (tmp_path / "p").exists()


def test_output_is_deterministic_and_replaced_atomically(runs, tmp_path, no_platforms):
    out = tmp_path / "proj"
    build_project(runs["small"], 3, "esp32dev", out, compile=False, host_arena=4784)
    first = {p.relative_to(out): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}
    (out / "stale.txt").write_text("old")
    build_project(runs["small"], 3, "esp32dev", out, compile=False, host_arena=4784)
    second = {p.relative_to(out): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}
    assert first == second
    # a failing build leaves the previous project untouched
    with pytest.raises(CodegenError):
        build_project(runs["small"], 3, "esp32dev", out, compile=False, op_table={})
    assert {p.relative_to(out): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()} == second
    leftovers = [p.name for p in tmp_path.iterdir() if p.name.startswith(".proj")]
    assert leftovers == []
    # refuses to replace a folder that is not a fedtiny project
    other = tmp_path / "mine"
    other.mkdir()
    (other / "notes.txt").write_text("keep")
    with pytest.raises(CodegenError, match="not a fedtiny firmware project"):
        build_project(runs["small"], 3, "esp32dev", other, compile=False, host_arena=4784)


# ----------------------------------------------------------------------------- CLI

def _invoke(args):
    from fedtiny.cli import main

    return CliRunner().invoke(main, args)


def test_build_cli_end_to_end(runs, tmp_path, no_platforms):
    out = tmp_path / "proj"
    r = _invoke(["build", "--device", "3", "--run", str(runs["small"]), "--out", str(out), "--board", "esp32dev"])
    assert r.exit_code == 0, r.output
    assert f"wrote {out}" in r.output
    assert "esp32dev" in r.output and "model        " in r.output and "bytes" in r.output
    assert re.search(r"flash .* margin [\d,]+ bytes", r.output) and re.search(r"RAM .* margin [\d,]+ bytes", r.output)
    assert f"pio run -d {out} -e esp32dev" in r.output
    assert (out / "src" / "main.cpp").is_file()


def test_build_default_out_dir(runs, tmp_path, no_platforms):
    run = tmp_path / "copy"
    shutil.copytree(runs["small"], run)
    r = _invoke(["build", "-d", "3", "--run", str(run), "--test-samples", "2"])
    assert r.exit_code == 0, r.output
    assert (run / "firmware" / "dev03-nano33ble" / "fedtiny_build.json").is_file()
    assert "test windows 2" in r.output


@pytest.mark.parametrize("args,needle", [
    (["--board", "nosuchboard"], "unknown board 'nosuchboard'"),
    (["--run", "/nonexistent/run"], "does not exist"),
    (["--device", "7"], "has no device 7"),
    (["--board", "/nonexistent/board.json"], "board file /nonexistent/board.json does not exist"),
    (["--test-samples", "-1"], "--test-samples must be >= 0"),
])
def test_build_cli_bad_input_is_one_error_line(runs, tmp_path, args, needle, no_platforms):
    base = {"--device": "3", "--run": str(runs["small"]), "--out": str(tmp_path / "p")}
    for i in range(0, len(args), 2):
        base[args[i]] = args[i + 1]
    r = _invoke(["build"] + [x for kv in base.items() for x in kv])
    assert r.exit_code == 2, r.output
    lines = [ln for ln in r.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and needle in lines[0], r.output


# ----------------------------------------------------------------------------- PlatformIO driving

def test_build_runs_pio_only_when_platform_installed(runs, tmp_path, no_platforms, monkeypatch):
    calls = []
    monkeypatch.setattr(piomod, "find_pio", lambda: "/opt/pio/bin/pio")
    out = tmp_path / "proj"
    res = build_project(runs["small"], 3, "nano33ble", out, runner=lambda a: calls.append(a) or 99, host_arena=4784)
    assert calls == [] and not res.compiled
    assert "pio run -d" in res.compile_hint and f"-d {out} -e nano33ble" in res.compile_hint
    assert "downloads on first use" in res.compile_hint

    _install_platform(no_platforms, "nordicnrf52", "10.0.0")
    res = build_project(runs["small"], 3, "nano33ble", out, runner=lambda a: calls.append(a) or 0, host_arena=4784)
    assert calls == [["/opt/pio/bin/pio", "run", "-d", str(out), "-e", "nano33ble"]]
    assert res.compiled

    # the esp32 env needs the pinned pioarduino release, not just any espressif32
    _install_platform(no_platforms, "espressif32", "6.9.0")
    res = build_project(runs["small"], 3, "esp32dev", tmp_path / "e", runner=lambda a: calls.append(a) or 0,
                        host_arena=4784)
    assert not res.compiled and len(calls) == 1 and "found espressif32 6.9.0" in res.compile_hint

    with pytest.raises(CodegenError, match=r"PlatformIO build failed \(exit 1\)"):
        build_project(runs["small"], 3, "nano33ble", out, runner=lambda a: 1, host_arena=4784)


def test_build_without_pio_executable_says_so(runs, tmp_path, no_platforms, monkeypatch):
    monkeypatch.setattr(piomod, "find_pio", lambda: None)
    res = build_project(runs["small"], 3, "nano33ble", tmp_path / "p", host_arena=4784)
    assert not res.compiled and "PlatformIO is not installed" in res.compile_hint and "pio run -d" in res.compile_hint


@pytest.fixture
def built(runs, tmp_path, no_platforms):
    projects = {}
    for board in ("esp32dev", "nano33ble"):
        projects[board] = build_project(runs["small"], 3, board, tmp_path / board, compile=False,
                                        host_arena=4784).project_dir
    return projects


def test_flash_without_pio_is_a_clear_error(built, monkeypatch):
    monkeypatch.setattr(piomod, "find_pio", lambda: None)
    r = _invoke(["flash", "-d", "3", "--board", "esp32dev", "--project", str(built["esp32dev"])])
    assert r.exit_code == 2
    assert r.output.strip().splitlines() == [
        "error: PlatformIO is not installed (no pio or platformio executable on PATH); "
        "install it with: pip install platformio"]


def test_flash_missing_platform_port_or_project(built, no_platforms, monkeypatch, tmp_path):
    monkeypatch.setattr(piomod, "find_pio", lambda: "/opt/pio/bin/pio")
    monkeypatch.setattr(cgcli, "RUNNER", lambda a: pytest.fail("must not run pio"))
    r = _invoke(["flash", "-d", "3", "--board", "nano33ble", "--project", str(built["nano33ble"])])
    assert r.exit_code == 2 and "platform nordicnrf52 is not installed" in r.output
    _install_platform(no_platforms, "nordicnrf52", "10.0.0")
    r = _invoke(["flash", "-d", "3", "--board", "nano33ble", "--project", str(built["nano33ble"]),
                 "--port", "/dev/ttyNOPE0"])
    assert r.exit_code == 2 and "port /dev/ttyNOPE0 does not exist" in r.output
    r = _invoke(["flash", "-d", "3", "--board", "nano33ble", "--project", str(tmp_path / "none")])
    assert r.exit_code == 2 and "no firmware project at" in r.output
    r = _invoke(["flash", "-d", "3", "--board", "esp32dev", "--project", str(built["nano33ble"])])
    assert r.exit_code == 2 and "was built for device 3 on nano33ble" in r.output


def test_flash_runs_exact_upload_argv(built, no_platforms, monkeypatch):
    calls = []
    monkeypatch.setattr(piomod, "find_pio", lambda: "/opt/pio/bin/pio")
    monkeypatch.setattr(cgcli, "RUNNER", lambda a: calls.append(a) or 0)
    _install_platform(no_platforms, "espressif32", "55.03.35")
    r = _invoke(["flash", "-d", "3", "--board", "esp32dev", "--project", str(built["esp32dev"]), "--port", "/dev/null"])
    assert r.exit_code == 0, r.output
    assert calls == [["/opt/pio/bin/pio", "run", "-d", str(built["esp32dev"]), "-e", "esp32dev", "-t", "upload",
                      "--upload-port", "/dev/null"]]

    # native USB (Nano 33 BLE): after upload the port is awaited, not treated as a failure
    import fedtiny.bench.ports as ports

    waited = []
    monkeypatch.setattr(ports, "wait_for_port", lambda port, ident, wait: waited.append((port, wait)) or port)
    _install_platform(no_platforms, "nordicnrf52", "10.0.0")
    r = _invoke(["flash", "-d", "3", "--board", "nano33ble", "--project", str(built["nano33ble"]),
                 "--port", "/dev/null", "--reconnect-wait", "2"])
    assert r.exit_code == 0, r.output
    assert calls[-1][-2:] == ["--upload-port", "/dev/null"] and waited == [("/dev/null", 2.0)]
    assert "board is back on /dev/null" in r.output

    monkeypatch.setattr(ports, "wait_for_port", lambda port, ident, wait: None)
    r = _invoke(["flash", "-d", "3", "--board", "nano33ble", "--project", str(built["nano33ble"]),
                 "--port", "/dev/null", "--reconnect-wait", "0"])
    assert r.exit_code == 2 and "did not come back" in r.output


# ----------------------------------------------------------------------------- board files

def test_root_platformio_ini_agrees_with_board_files():
    import configparser

    text = (REPO / "platformio.ini").read_text()
    assert text == boardsmod.root_platformio_ini(), "regenerate with: python -m fedtiny.codegen.boards"
    ini = configparser.ConfigParser()
    ini.read_string(text)
    assert boardsmod.board_names() == ["esp32dev", "nano33ble", "qemu-m4"]
    names = [n for n in boardsmod.board_names() if boardsmod.load_board(n).uses_platformio]
    assert names == ["esp32dev", "nano33ble"]          # qemu-m4 builds with arm-none-eabi-gcc
    assert sorted(s[4:] for s in ini.sections() if s.startswith("env:")) == names
    for name in names:
        b = boardsmod.load_board(name)
        env = ini[f"env:{name}"]
        assert env["platform"] == b.pio["platform"] and env["board"] == b.pio["board"]
        assert env["framework"] == b.pio["framework"] == "arduino"
        assert int(env["monitor_speed"]) == b.data["serial_baud"]
        assert [d for d in env.get("lib_deps", "").split("\n") if d] == b.pio["lib_deps"]


def test_board_facts():
    nano, esp = boardsmod.load_board("nano33ble"), boardsmod.load_board("esp32dev")
    assert (nano.data["mcu"], nano.data["clock_mhz"], nano.data["ram_bytes"], nano.data["flash_bytes"]) == \
        ("nRF52840", 64, 256 * 1024, 1024 * 1024)
    assert (esp.data["mcu"], esp.data["clock_mhz"], esp.data["flash_bytes"]) == ("ESP32-WROOM-32", 240, 4 * 1024 * 1024)
    assert nano.pio["platform"] == "nordicnrf52" and nano.pio["board"] == "nano33ble"
    assert esp.pio["platform_name"] == "espressif32" and esp.pio["board"] == "esp32dev"
    assert "2341:005a" in nano.data["usb_ids"] and nano.data["native_usb"]
    assert all("#" in d for d in nano.pio["lib_deps"])  # pinned by git ref
    assert esp.data["arena_on_heap"] and not nano.data["arena_on_heap"]
