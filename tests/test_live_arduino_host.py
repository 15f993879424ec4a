"""Live firmware for the PlatformIO boards (Nano 33 BLE IMU, ESP32 ADC, user sensor), EXECUTED on the
host: the projects ``fedtiny build --input sensor`` generates (the TFLM sketch and the compiled
runtime) are compiled unmodified with g++/gcc against the scripted Arduino of tests/hoststubs.py
(a fake mbed::Ticker / ESP32 hardware timer whose interrupt runs once per sample period, a fake
IMU / ADC playing a recording, a serial port that can block for a given number of periods) and
driven with commands at given periods. Everything is deterministic, so counts are exact.

The TFLM interpreter is an oracle (as in tests/test_sketch_on_host.py): Invoke() knows only the
int8 inputs of the windows the host twin (fedtiny.live) classifies, with the real model's int8
outputs under tflite-micro; so every live decision is made only if the sketch's sampling, FIFO and
front end reproduced the twin's window exactly. The compiled runtime runs its own generated C model.

Real board code NOT run here: the mbed core, the ESP32 core, the IMU libraries (see docs/live.md for
what was compiled against the real headers).
"""
from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from fedtiny.firmware import protocol as P
from hoststubs import IMU_H, LIVE_ARDUINO_H, LIVE_WORLD_CPP, MBED_H

pytestmark = pytest.mark.skipif(shutil.which("g++") is None or shutil.which("gcc") is None,
                                reason="needs gcc and g++")
HOP = 20
IMU_RATE = 100
IMU_FULL_SCALE = [2.0, 2.0, 2.0, 500.0, 500.0, 500.0]   # g, deg/s

TFLM_ORACLE_CPP = r"""
// the TFLM stand-in's behaviour: tensors in the arena; Invoke() = the oracle table's outputs
#include <string.h>
#include "tensorflow/lite/micro/micro_interpreter.h"
#include "fedtiny_config.h"
#include "oracle_table.h"
namespace tflite {
uint32_t Model::version() const { return TFLITE_SCHEMA_VERSION; }
MicroInterpreter::MicroInterpreter(const Model* model, const MicroOpResolver& op_resolver, uint8_t* arena,
                                   size_t size)
    : model_(model), resolver_(&op_resolver), arena_(arena), arena_size_(size), used_(0), input_(nullptr),
      output_(nullptr) {}
TfLiteStatus MicroInterpreter::AllocateTensors() {
  uintptr_t p = (reinterpret_cast<uintptr_t>(arena_) + 15) & ~static_cast<uintptr_t>(15);
  int8_t* in = reinterpret_cast<int8_t*>(p);
  p = (p + FT_INPUT_BYTES + 15) & ~static_cast<uintptr_t>(15);
  int8_t* out = reinterpret_cast<int8_t*>(p);
  p = (p + FT_N_CLASSES + 15) & ~static_cast<uintptr_t>(15);
  TfLiteTensor* t = reinterpret_cast<TfLiteTensor*>(p);
  p += 2 * sizeof(TfLiteTensor);
  used_ = static_cast<size_t>(p - reinterpret_cast<uintptr_t>(arena_));
  if (used_ > arena_size_) return kTfLiteError;
  t[0].type = kTfLiteInt8; t[0].data.int8 = in; t[0].bytes = FT_INPUT_BYTES;
  t[1].type = kTfLiteInt8; t[1].data.int8 = out; t[1].bytes = FT_N_CLASSES;
  input_ = &t[0];
  output_ = &t[1];
  return kTfLiteOk;
}
TfLiteStatus MicroInterpreter::Invoke() {
  for (int i = 0; i < kOracleN; ++i) {
    if (memcmp(kOracleX[i], input_->data.int8, FT_INPUT_BYTES) == 0) {
      memcpy(output_->data.int8, kOracleY[i], FT_N_CLASSES);
      return kTfLiteOk;
    }
  }
  return kTfLiteError;
}
TfLiteTensor* MicroInterpreter::input(size_t i) { return i == 0 ? input_ : nullptr; }
TfLiteTensor* MicroInterpreter::output(size_t i) { return i == 0 ? output_ : nullptr; }
size_t MicroInterpreter::arena_used_bytes() const { return used_; }
}
"""


def _oracle_table(xs: np.ndarray, ys: np.ndarray) -> tuple[str, str]:
    def rows(a):
        return ",\n".join("  {" + ",".join(str(int(v)) for v in r) + "}" for r in a)
    h = ('#pragma once\n#include <stdint.h>\n#include "fedtiny_config.h"\nextern const int kOracleN;\n'
         "extern const int8_t kOracleX[][FT_INPUT_BYTES];\nextern const int8_t kOracleY[][FT_N_CLASSES];\n")
    c = ('#include "oracle_table.h"\n' f"const int kOracleN = {len(xs)};\n"
         f"const int8_t kOracleX[][FT_INPUT_BYTES] = {{\n{rows(xs)}\n}};\n"
         f"const int8_t kOracleY[][FT_N_CLASSES] = {{\n{rows(ys)}\n}};\n")
    return h, c


@pytest.fixture(scope="module")
def imu_run(small_run, tmp_path_factory) -> Path:
    """The small electrical run relabelled as a 100 Hz IMU model: device 0's rate and channel full
    scales (g, deg/s) changed in device.json; model and windows are the run's."""
    run = tmp_path_factory.mktemp("imu_run") / "run"
    shutil.copytree(small_run, run)
    d = run / "devices" / "dev00" / "device.json"
    info = json.loads(d.read_text())
    info["frontend"] = {**info["frontend"], "rate_hz": float(IMU_RATE)}
    info["channel_scale"] = IMU_FULL_SCALE
    d.write_text(json.dumps(info))
    return run


def _recording(run: Path) -> np.ndarray:
    """The run's test windows one after another as int16 counts (what the sim sensor plays)."""
    from fedtiny.bench.rundata import load_run_device
    from fedtiny.codegen.live import recording_from_run
    from fedtiny.codegen.tflite_model import read_model

    rd = load_run_device(run, 0)
    facts = read_model(rd.model_bytes)
    units = facts.input.scale * (rd.x_int8.astype(np.float64) - facts.input.zero_point)
    return recording_from_run(units, None)


class Firmware:
    """A generated live project compiled for the host with the scripted Arduino."""

    def __init__(self, run: Path, root: Path, board: str, runtime: str, sensor: str, define: str,
                 revision: str | None = None, counts: np.ndarray | None = None):
        from fedtiny.codegen.build import build_project
        from fedtiny.live import LiveModel, live_decisions

        self.root = root
        res = build_project(run, 0, board, root / "proj", test_samples=1, compile=False, runtime=runtime,
                            input="sensor", sensor=sensor, hop=HOP, board_revision=revision)
        self.proj, self.spec = res.project_dir, res.live
        stubs = root / "stubs"
        files = {"Arduino.h": LIVE_ARDUINO_H, "mbed.h": MBED_H, "fake_imu.h": IMU_H,
                 "Arduino_LSM9DS1.h": IMU_H, "Arduino_BMI270_BMM150.h": IMU_H}
        extra = [root / "world.cpp"]
        (root / "world.cpp").write_text(LIVE_WORLD_CPP)
        if runtime == "tflm":
            from fedtiny.codegen.ops import OP_TABLE
            from test_sketch_on_host import INTERPRETER_H, SCHEMA_H, resolver_h

            manifest = json.loads((self.proj / "fedtiny_build.json").read_text())
            files.update({"TensorFlowLite.h": "#pragma once\n",
                          "tensorflow/lite/schema/schema_generated.h": SCHEMA_H,
                          "tensorflow/lite/micro/micro_interpreter.h": INTERPRETER_H,
                          "tensorflow/lite/micro/micro_mutable_op_resolver.h":
                              resolver_h([OP_TABLE[op] for op in manifest["ops"]])})
            # the oracle knows every window the twin classifies on the tiled recording
            model = LiveModel.from_run(run, 0)
            tiled = np.tile(counts, (3, 1))
            ds = live_decisions(tiled, model, HOP)
            xs = model.model_input(np.stack([tiled[d.n - model.window:d.n] for d in ds])).reshape(len(ds), -1)
            ys = np.array([d.q for d in ds], np.int8)
            h, c = _oracle_table(xs, ys)
            files["oracle_table.h"] = h
            (root / "oracle.cpp").write_text(TFLM_ORACLE_CPP)
            (root / "oracle_table.cpp").write_text(c)
            extra += [root / "oracle.cpp", root / "oracle_table.cpp"]
        for rel, text in files.items():
            (stubs / rel).parent.mkdir(parents=True, exist_ok=True)
            (stubs / rel).write_text(text)
        inc = ["-I", str(stubs), "-I", str(self.proj / "include")]
        objs = []
        for src in sorted((self.proj / "src").iterdir()):
            obj = root / (src.name + ".o")
            cc = ["gcc", "-std=gnu99"] if src.suffix == ".c" else ["g++", "-std=gnu++14"]
            r = subprocess.run([*cc, "-O1", "-Wall", "-Wextra", "-Werror", f"-D{define}", *inc, "-c", str(src),
                                "-o", str(obj)], capture_output=True, text=True)
            assert r.returncode == 0, (src.name, r.stderr[-3000:])
            objs.append(str(obj))
        self.exe = root / "fw"
        r = subprocess.run(["g++", "-std=gnu++14", "-O1", "-Wall", "-Wextra", f"-D{define}", *inc,
                            *map(str, extra), *objs, "-o", str(self.exe)], capture_output=True, text=True)
        assert r.returncode == 0, r.stderr[-3000:]

    def run(self, recording: np.ndarray, stall_at: int, stall_periods: int, *cmds: str, adc: bool = False):
        """(messages, stderr) of one run playing ``recording`` (float32 readings or uint16 codes)."""
        path = self.root / "rec.bin"
        recording.tofile(path)
        env = {"FAKE_ADC": "1"} if adc else {}
        out = subprocess.run([str(self.exe), str(path), str(len(recording)), str(recording.shape[1]),
                              str(stall_at), str(stall_periods), *cmds], capture_output=True, timeout=120,
                             env=env)
        assert out.returncode == 0, out.stderr
        msgs = [P.parse_line(line) for line in out.stdout.splitlines(keepends=True)]
        assert all(m is not None for m in msgs), out.stdout[:500]
        return msgs, out.stderr.decode()


def _capture(msgs, channels):
    from test_live_qemu import _frames_and_gaps

    start = msgs.index(next(m for m in msgs if isinstance(m, P.Stream)))
    got, gaps, nxt = _frames_and_gaps(msgs[start:], channels)
    return msgs[start], got, gaps, nxt, msgs[-2]


@pytest.fixture(scope="module")
def nano_tflm(imu_run, tmp_path_factory):
    """The TFLM sketch of a Nano 33 BLE rev2 reading its IMU: (firmware, counts, readings)."""
    from fedtiny.live import sensor_counts

    counts = _recording(imu_run)
    fs = np.array(IMU_FULL_SCALE)
    readings = (counts.astype(np.float64) * fs / 32767.0).astype(np.float32)   # what the IMU says
    played = sensor_counts(readings, fs)
    assert np.array_equal(played, counts)          # g / deg/s -> counts inverts the scale exactly
    fw = Firmware(imu_run, tmp_path_factory.mktemp("nano_tflm"), "nano33ble", "tflm", "imu",
                  "ARDUINO_ARCH_MBED", revision="rev2", counts=counts)
    return fw, counts, readings


def test_tflm_sketch_live_on_the_nano_imu_decides_as_the_twin(nano_tflm, imu_run):
    """~4 s (module fixture: build, oracle table, compile; run ~0.1 s): live decisions, beats, banner."""
    from fedtiny.live import LiveModel, events, live_decisions

    fw, counts, readings = nano_tflm
    assert "arduino-libraries/Arduino_BMI270_BMM150@1.2.3" in (fw.proj / "platformio.ini").read_text()
    msgs, err = fw.run(readings, -1, 0, "info@1", "live@2", "stop@1100")
    assert "ticker 10000 us" in err
    banner = next(m for m in msgs if isinstance(m, P.Banner))
    stream = next(m for m in msgs if isinstance(m, P.Stream))
    assert banner.input == "sensor" and banner.board == "nano33ble"
    assert (stream.rate_hz, stream.channels, stream.hop, stream.source) == (IMU_RATE, 6, HOP, "imu")
    assert stream.unit == "mixed" and stream.scale == pytest.approx(2.0 / 32767, abs=1e-6)
    evs = [m for m in msgs if isinstance(m, P.Event)]
    beats = [m for m in msgs if isinstance(m, P.Beat)]
    until = max(b.n for b in beats)
    twin = [d for d in events(live_decisions(np.tile(counts, (3, 1))[:until], LiveModel.from_run(imu_run, 0), HOP))]
    assert len(twin) >= 2 and until >= 1000
    got = [(e.n, e.pred, e.score) for e in evs if e.n <= until]
    assert got == [(d.n, d.pred, float(P._fixed6(d.score))) for d in twin]
    assert [b.n for b in beats] == list(range(IMU_RATE, until + 1, IMU_RATE))
    assert all(b.dropped == 0 for b in beats) and msgs[-1] == P.Ready()


def test_tflm_sketch_capture_and_a_stalled_port_on_the_nano(nano_tflm):
    """< 1 s: capture returns the IMU's frames exactly (also an endless one ended by stop); a port
    blocked for 300 periods loses all but the FIFO's window + hop frames, counted and reported as
    one gap; live counts them too."""
    fw, counts, readings = nano_tflm
    tiled = np.tile(counts, (3, 1))
    msgs, _ = fw.run(readings, -1, 0, "capture 400@1")
    _, got, gaps, nxt, end = _capture(msgs, 6)
    assert end == P.CaptureEnd(400, 0) and gaps == [] and nxt == 400
    assert all(got[i] == tuple(int(v) for v in tiled[i]) for i in range(400))
    msgs, _ = fw.run(readings, 2000, 300, "capture 900@1")
    _, got, gaps, nxt, end = _capture(msgs, 6)
    fifo = fw.spec.window + HOP
    assert nxt == 900 and end.sent + end.dropped == 900 and len(gaps) == 1
    assert end.dropped == 300 - fifo
    assert all(got[i] == tuple(int(v) for v in tiled[i]) for i in got)
    msgs, _ = fw.run(readings, -1, 0, "capture 0@1", "stop@500")   # endless capture: stop ends it
    _, got, gaps, nxt, end = _capture(msgs, 6)
    assert gaps == [] and end.dropped == 0 and 450 <= end.sent == nxt <= 500 and msgs[-1] == P.Ready()
    assert all(got[i] == tuple(int(v) for v in tiled[i]) for i in got)
    msgs, _ = fw.run(readings, 600, 333, "live@1", "stop@1400")
    beats = [m for m in msgs if isinstance(m, P.Beat)]
    assert beats[-1].dropped == 333 - HOP and msgs[-1] == P.Ready()


def test_compiled_runtime_on_the_esp32_adc(imu_run, small_run, tmp_path):
    """~2 s (build, compile with the generated C model): ADC codes -> counts by the board file's
    rule (twin fedtiny.live.adc_counts), capture exact, live decisions equal the twin's."""
    from fedtiny.live import LiveModel, adc_counts, events, live_decisions

    fw = Firmware(small_run, tmp_path, "esp32dev", "compiled", "adc", "ARDUINO_ARCH_ESP32")
    cfg = (fw.proj / "include" / "ft_live_config.h").read_text()
    assert "#define FT_ADC_PINS {36, 39, 34, 35, 32, 33}" in cfg and "FT_ADC_ATTENUATION ADC_11db" in cfg
    assert "lib_deps" not in (fw.proj / "platformio.ini").read_text()
    counts = _recording(small_run)
    codes = np.clip(np.round(counts / 16.0) + 2048, 0, 4095).astype(np.uint16)
    played = adc_counts(codes, 2048, 16)
    assert np.abs(played.astype(int) - counts).max() <= 16
    msgs, err = fw.run(codes, -1, 0, "capture 300@1", adc=True)
    assert "timer 1000000 Hz alarm 500 autoreload 1" in err
    banner = next(m for m in msgs if isinstance(m, P.Banner))
    assert banner.input == "sensor"
    _, got, gaps, nxt, end = _capture(msgs, 6)
    assert end == P.CaptureEnd(300, 0)
    assert all(got[i] == tuple(int(v) for v in played[i]) for i in range(300))
    msgs, _ = fw.run(codes, -1, 0, "live@1", "stop@2500", adc=True)
    evs = [m for m in msgs if isinstance(m, P.Event)]
    beats = [m for m in msgs if isinstance(m, P.Beat)]
    assert [(b.n, b.dropped) for b in beats] == [(2000, 0)] and msgs[-1] == P.Ready()
    until = max(e.n for e in evs)
    twin = events(live_decisions(np.tile(played, (4, 1))[:until], LiveModel.from_run(small_run, 0), HOP))
    assert [(e.n, e.pred, e.score) for e in evs] == [(d.n, d.pred, float(P._fixed6(d.score))) for d in twin]
    assert len(evs) >= 2


def test_user_sensor_file_in_an_arduino_project(imu_run, tmp_path):
    """~2 s: --sensor user on the Nano (compiled runtime): the weak default has no sample, so capture
    reports one gap; the file is the same commented C file as on qemu-m4."""
    fw = Firmware(imu_run, tmp_path, "nano33ble", "compiled", "user", "ARDUINO_ARCH_MBED")
    assert "__attribute__((weak)) int ft_sensor_read" in (fw.proj / "src" / "ft_sensor_user.c").read_text()
    assert "lib_deps" not in (fw.proj / "platformio.ini").read_text()         # no IMU, no TFLM library
    msgs, _ = fw.run(np.zeros((4, 6), np.float32), -1, 0, "capture 50@1")
    assert msgs[-3:] == [P.Gap(0, 50), P.CaptureEnd(0, 50), P.Ready()]


def test_board_revision_and_sensor_errors_are_one_line(imu_run, tmp_path):
    """< 2 s: a missing or unknown revision, a revision for a sensor without one, a recording for a
    real sensor: one error line, exit 2, nothing written."""
    from click.testing import CliRunner

    from fedtiny.cli import main

    cases = [(["--board", "nano33ble"], "depends on the board revision: add --board-revision with one of "
                                        "rev1 (LSM9DS1), rev2 (BMI270 + BMM150)"),
             (["--board", "nano33ble", "--board-revision", "rev9"], "unknown --board-revision 'rev9'"),
             (["--board", "nano33ble", "--sensor", "user", "--board-revision", "rev1"],
              "the user sensor of nano33ble has none"),
             (["--board", "nano33ble", "--board-revision", "rev1", "--recording", "x.npy"],
              "--recording is played by the sim sensor only"),
             (["--board", "esp32dev", "--sensor", "imu"], "board esp32dev has no imu sensor")]
    for args, needle in cases:
        r = CliRunner().invoke(main, ["build", "--device", "0", "--run", str(imu_run), "--input", "sensor",
                                      "--out", str(tmp_path / "fw"), *args])
        lines = r.output.strip().splitlines()
        assert r.exit_code == 2 and len(lines) == 1 and lines[0].startswith("error:") and needle in lines[0], r.output
        assert not (tmp_path / "fw").exists()
    # the compiled runtime on a rev1 board: the IMU library pinned, no TFLM library
    from fedtiny.codegen.build import build_project

    res = build_project(imu_run, 0, "nano33ble", tmp_path / "r1", test_samples=1, compile=False,
                        runtime="compiled", input="sensor", board_revision="rev1")
    ini = (res.project_dir / "platformio.ini").read_text()
    assert "arduino-libraries/Arduino_LSM9DS1@1.1.1" in ini and "tflite" not in ini
    assert "#define FT_IMU_HEADER <Arduino_LSM9DS1.h>" in (res.project_dir / "include" / "ft_live_config.h").read_text()


def test_nano_project_compiles_for_cortex_m4(nano_tflm, tmp_path):
    """< 1 s: the Nano project's sources (the sketch, ft_live.c, the FIFO, the sampler, the IMU glue)
    with arm-none-eabi-gcc/g++ -mcpu=cortex-m4 -fsyntax-only against the same stand-ins, so 32-bit
    int/long and the target's headers are checked too."""
    if shutil.which("arm-none-eabi-g++") is None:
        pytest.skip("needs arm-none-eabi-g++")
    fw, _, _ = nano_tflm
    inc = ["-I", str(fw.root / "stubs"), "-I", str(fw.proj / "include")]
    for src in sorted((fw.proj / "src").iterdir()):
        cc = ["arm-none-eabi-gcc", "-std=gnu99"] if src.suffix == ".c" else ["arm-none-eabi-g++", "-std=gnu++14"]
        r = subprocess.run([*cc, "-mcpu=cortex-m4", "-mthumb", "-mfloat-abi=hard", "-mfpu=fpv4-sp-d16",
                            "-Wall", "-Wextra", "-Werror", "-DARDUINO_ARCH_MBED", *inc, "-fsyntax-only", str(src)],
                           capture_output=True, text=True)
        assert r.returncode == 0, (src.name, r.stderr[-3000:])
