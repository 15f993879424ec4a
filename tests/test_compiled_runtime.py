"""The compiled runtime (``fedtiny build --runtime compiled``) on the host.

* ``qmath``: TFLite's fixed-point primitives on known values and edge cases;
* bit-exactness: the generated ``ft_model.c`` compiled with the host gcc reproduces the
  tflite-micro runtime (``fedtiny.trainer.tflm.run_int8``) on EVERY test window of EVERY device of
  small runs of both built-in fleets (the host build takes the plain-C dot product; the Cortex-M4
  build's SMLAD path is checked the same way on QEMU, tests/test_qemu_m4.py);
* refusals: an op outside the list (TANH) and an unsupported variant (CONV_2D padding SAME) are
  named at build time, and the TFLM runtime is refused for qemu-m4 with the reason;
* the Arduino flavour (nano33ble --runtime compiled): its platformio.ini has no TFLM lib_deps, and
  the project itself (fedtiny_app.c, ft_model.c, test_data.c, main.cpp) is compiled with the host
  gcc/g++ against a stand-in Arduino.h (Serial on a pseudo-terminal, micros(), reset = re-exec)
  and driven by ``fedtiny bench`` exactly as a board: every decision, streamed scores, error paths
  and reset.
"""
from __future__ import annotations

import json
import os
import select
import shutil
import subprocess
import time
import tty
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from fedtiny.codegen.build import build_project
from fedtiny.codegen.compiled import emit, graph, qmath
from fedtiny.codegen.errors import CodegenError
from hoststubs import ARDUINO_H
from fedtiny.firmware import protocol as P

needs_gcc = pytest.mark.skipif(shutil.which("gcc") is None, reason="needs gcc")

# ----------------------------------------------------------------------------- qmath


def test_quantize_multiplier_known_values():
    assert qmath.quantize_multiplier(0.0) == (0, 0)
    assert qmath.quantize_multiplier(0.5) == (1 << 30, 0)
    assert qmath.quantize_multiplier(1.0) == (1 << 30, 1)
    assert qmath.quantize_multiplier(0.75) == (3 << 29, 0)
    m, s = qmath.quantize_multiplier(0.0123)
    assert (1 << 30) <= m < (1 << 31) and abs(m * 2.0 ** (s - 31) - 0.0123) < 1e-11
    # a mantissa that rounds up to 2^31 is renormalised
    assert qmath.quantize_multiplier(1.0 - 2.0 ** -40) == (1 << 30, 1)
    assert qmath.quantize_multiplier(2.0 ** -40) == (0, 0)          # below 2^-31: flushed to zero


def test_fixed_point_primitives():
    i32min, i32max = qmath.INT32_MIN, qmath.INT32_MAX
    assert qmath.srdhm(i32min, i32min) == i32max                     # the one saturating case
    assert qmath.srdhm(1 << 30, 1 << 30) == 1 << 29                  # 0.5 * 0.5 = 0.25
    assert qmath.srdhm(-(1 << 30), 1 << 30) == -(1 << 29)
    # ties: 1.5 -> 2 but -1.5 -> -1 (the nudge 1 - 2^30 and truncating division of gemmlowp)
    assert qmath.srdhm(3, 1 << 30) == 2 and qmath.srdhm(-3, 1 << 30) == -1
    assert qmath.srdhm(-5, 1 << 30) == -2
    assert [qmath.rdbpot(v, 1) for v in (3, -3, 2, -2, 1, -1)] == [2, -2, 1, -1, 1, -1]
    assert qmath.rdbpot(5, 0) == 5 and qmath.rdbpot(-(1 << 31), 31) == -1
    assert qmath.mbqm(1000, 1 << 30, 0) == 500 and qmath.mbqm(1000, 1 << 30, 2) == 2000
    assert qmath.sat_shift_left(1 << 29, 2) == i32max and qmath.sat_shift_left(-(1 << 29), 2) == i32min
    assert qmath.sat_shift_left(5, 3) == 40


def test_activation_ranges_and_softmax_table():
    assert qmath.activation_range("NONE", 0.1, 3) == (-128, 127)
    assert qmath.activation_range("RELU", 0.05, -128) == (-128, 127)
    assert qmath.activation_range("RELU6", 0.1, -10) == (-10, 50)
    assert qmath.activation_range("RELU_N1_TO_1", 0.01, 0) == (-100, 100)
    with pytest.raises(ValueError):
        qmath.activation_range("TANH", 0.1, 0)
    table = qmath.softmax_exp_table(1.0, 0.1)
    assert table[0] == qmath.INT32_MAX and all(a >= b for a, b in zip(table, table[1:]))
    # exp(-d * 0.1) in Q0.31, to within fixed-point error
    for d in (1, 5, 20, 60):
        assert abs(table[d] / 2.0 ** 31 - np.exp(-0.1 * d)) < 2e-6, d
    # a uniform row: every class 1/k = 256/k - 128 codes
    assert qmath.softmax_int8([7] * 4, table) == [-64] * 4


# ----------------------------------------------------------------------------- bit-exact on the host

MAIN_C = r"""
#include <stdio.h>
#include "ft_model.h"
int main(void) {
  int8_t in[FT_MODEL_INPUT_BYTES], out[FT_MODEL_OUTPUT_BYTES];
  while (fread(in, 1, sizeof in, stdin) == sizeof in) {
    ft_model_invoke(in, out);
    fwrite(out, 1, sizeof out, stdout);
  }
  return 0;
}
"""


def host_model(model: bytes, root: Path) -> Path:
    """ft_model.c of ``model`` compiled with gcc (-Wall -Wextra -Werror) into a filter program."""
    files = emit.model_files(graph.lower(model), 0, "0" * 64)
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    (root / "main.c").write_text(MAIN_C)
    exe = root / "model"
    r = subprocess.run(["gcc", "-std=c99", "-O2", "-Wall", "-Wextra", "-Werror", "-I", str(root / "include"),
                        str(root / "src" / "ft_model.c"), str(root / "main.c"), "-o", str(exe)],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-3000:]
    return exe


@needs_gcc
@pytest.mark.parametrize("dataset", ["electrical", "mechanical"])
def test_bit_exact_with_tflite_micro_on_every_window(dataset, builtin_runs, tmp_path):
    from fedtiny.trainer.tflm import run_int8

    run = builtin_runs[dataset]
    devices = sorted((run / "devices").iterdir())
    assert len(devices) >= 3
    checked = 0
    for ddir in devices:
        model = (ddir / "model_int8.tflite").read_bytes()
        split = np.load(ddir / "test_split.npz")
        x = split["x_int8"]
        exe = host_model(model, tmp_path / ddir.name)
        out = subprocess.run([str(exe)], input=np.ascontiguousarray(x, np.int8).tobytes(),
                             capture_output=True, check=True).stdout
        got = np.frombuffer(out, np.int8).reshape(len(x), -1)
        want = run_int8(model, x)
        assert got.shape == want.shape
        bad = np.flatnonzero((got != want).any(axis=1))
        assert bad.size == 0, (ddir.name, bad[:5].tolist(), got[bad[:3]].tolist(), want[bad[:3]].tolist())
        assert np.array_equal(got, split["out_int8"])          # the run's own recorded scores
        checked += len(x)
    assert checked >= 3 * 20


def test_program_of_the_fleet_model(builtin_runs):
    model = (builtin_runs["electrical"] / "devices" / "dev00" / "model_int8.tflite").read_bytes()
    prog = graph.lower(model)
    assert prog.op_sequence.count("CONV_2D") == 3 and "MEAN" not in prog.op_sequence
    assert [layer.kind for layer in prog.layers] == ["conv", "conv", "conv", "avgpool", "fc", "fc", "softmax"]
    assert all(not layer.p.get("per_channel", False) for layer in prog.layers if layer.kind == "fc")
    conv = prog.layers[0].p
    assert len(set(conv["mult"])) > 1                           # per-channel conv multipliers
    bp = emit.plan(prog)
    assert bp.arena_bytes < 2048 and bp.input_offset == 0
    sizes = [prog.input_size] + [layer.out_size for layer in prog.layers]
    assert bp.arena_bytes >= max(sizes[0::2]) + max(sizes[1::2])


# ----------------------------------------------------------------------------- refusals

def _convert(build_model) -> bytes:
    from runfixture import keras_int8

    model = build_model()
    return keras_int8(model, np.random.default_rng(0).normal(size=(16,) + tuple(model.input_shape[1:])))


@pytest.fixture(scope="module")
def odd_models():
    import keras

    def tanh_model():
        inp = keras.Input(shape=(8,))
        return keras.Model(inp, keras.layers.Dense(4, activation="tanh")(inp))

    def same_pad_model():
        inp = keras.Input(shape=(16, 2))
        x = keras.layers.Conv1D(4, 3, padding="same", activation="relu")(inp)
        return keras.Model(inp, keras.layers.Dense(3, activation="softmax")(keras.layers.GlobalAveragePooling1D()(x)))

    return {"tanh": _convert(tanh_model), "same": _convert(same_pad_model)}


def test_unsupported_ops_and_variants_are_named(odd_models):
    with pytest.raises(CodegenError, match=r"op\(s\) TANH .*compiled runtime"):
        graph.lower(odd_models["tanh"])
    with pytest.raises(CodegenError, match=r"operator \d+ \(CONV_2D\): padding SAME"):
        graph.lower(odd_models["same"])
    with pytest.raises(CodegenError, match="not a TFLite flatbuffer"):
        graph.lower(b"\0" * 64)


def test_tflm_refused_for_qemu_m4_and_unsupported_op_at_build(builtin_runs, odd_models, tmp_path):
    import hashlib
    import shutil as sh

    from fedtiny.codegen import cli as cgcli

    run = builtin_runs["electrical"]
    r = CliRunner().invoke(cgcli.build, ["--device", "0", "--board", "qemu-m4", "--run", str(run),
                                         "--runtime", "tflm", "--out", str(tmp_path / "p")])
    assert r.exit_code == 2 and r.output.count("\n") == 1, r.output
    assert "cannot be built with the tflm runtime" in r.output and "no registry ships TFLM" in r.output
    assert not (tmp_path / "p").exists()
    # a run whose device model has an op the compiled runtime lacks: refused by name, nothing written
    bad = tmp_path / "badrun"
    sh.copytree(run, bad, ignore=sh.ignore_patterns("firmware", "state", "bench"))
    ddir = bad / "devices" / "dev00"
    (ddir / "model_int8.tflite").write_bytes(odd_models["tanh"])
    info = json.loads((ddir / "device.json").read_text())
    info["model_sha256"] = hashlib.sha256(odd_models["tanh"]).hexdigest()
    (ddir / "device.json").write_text(json.dumps(info))
    r = CliRunner().invoke(cgcli.build, ["--device", "0", "--board", "nano33ble", "--run", str(bad),
                                         "--runtime", "compiled", "--out", str(tmp_path / "q")])
    assert r.exit_code == 2 and "TANH" in r.output and r.output.count("\n") == 1, r.output
    assert not (tmp_path / "q").exists()


# ----------------------------------------------------------------------------- the Arduino flavour on the host


SHIM_CPP = r"""
#include <Arduino.h>
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>
void setup();
void loop();
FakeSerial Serial;
static char** g_argv;
static unsigned char g_rx[4096];
static size_t g_head = 0, g_len = 0;
static void pump(int ms) {
  if (g_head < g_len) return;
  struct pollfd p = {0, POLLIN, 0};
  int r = poll(&p, 1, ms);
  if (r <= 0) return;
  if (p.revents & POLLIN) {
    ssize_t n = ::read(0, g_rx, sizeof g_rx);
    if (n > 0) { g_head = 0; g_len = (size_t)n; return; }
    if (n < 0 && (errno == EINTR || errno == EAGAIN)) return;
    _exit(0);
  }
  if (p.revents & (POLLHUP | POLLERR | POLLNVAL)) _exit(0);
}
int FakeSerial::available() { pump(0); return (int)(g_len - g_head); }
int FakeSerial::read() { pump(0); return g_head < g_len ? g_rx[g_head++] : -1; }
size_t FakeSerial::write(const uint8_t* d, size_t n) {
  size_t done = 0;
  while (done < n) {
    ssize_t w = ::write(1, d + done, n - done);
    if (w > 0) { done += (size_t)w; continue; }
    if (w < 0 && (errno == EINTR || errno == EAGAIN)) continue;
    _exit(0);
  }
  return n;
}
unsigned long micros() {
  struct timespec t; clock_gettime(CLOCK_MONOTONIC, &t);
  return (unsigned long)(t.tv_sec * 1000000ull + t.tv_nsec / 1000);
}
unsigned long millis() { return micros() / 1000ul; }
void delay(unsigned long ms) { usleep((useconds_t)(ms * 1000ul)); }
void NVIC_SystemReset() { fprintf(stderr, "shim: restart\n"); fflush(stderr); execv("/proc/self/exe", g_argv); _exit(4); }
int main(int, char** argv) {
  g_argv = argv;
  fprintf(stderr, "shim: boot\n"); fflush(stderr);
  setup();
  for (;;) { pump(100); loop(); }
}
"""


class OnPty:
    """A program whose stdin/stdout is the master side of a pty; ``port`` is the slave path."""

    def __init__(self, exe: Path, errlog: Path):
        master, self.slave = os.openpty()
        tty.setraw(self.slave)
        self.port = os.ttyname(self.slave)
        self.err = open(errlog, "wb")
        self.errlog = errlog
        self.proc = subprocess.Popen([str(exe)], stdin=master, stdout=master, stderr=self.err, close_fds=True)
        os.close(master)
        self.buf = b""

    def ask(self, data: bytes, timeout: float = 120.0) -> list:      # a hang guard: returns on ready
        os.write(self.slave, data)
        out = []
        deadline = time.monotonic() + timeout
        while not out or not isinstance(out[-1], P.Ready):
            while b"\n" not in self.buf:
                left = deadline - time.monotonic()
                assert left > 0, (out, self.buf[:200])
                r, _, _ = select.select([self.slave], [], [], left)
                if r:
                    self.buf += os.read(self.slave, 65536)
            line, _, self.buf = self.buf.partition(b"\n")
            msg = P.parse_line(line + b"\n")
            assert msg is not None, line
            out.append(msg)
        return out

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=5)
        os.close(self.slave)
        self.err.close()


def cmd(text: str) -> bytes:
    return f"{text}{P.CRC_SEP}{P.crc16(text.encode()):04x}\n".encode()


@pytest.fixture(scope="module")
def arduino_project(builtin_runs, tmp_path_factory):
    if shutil.which("gcc") is None or shutil.which("g++") is None:
        pytest.skip("needs gcc and g++")
    root = tmp_path_factory.mktemp("compiled_nano")
    res = build_project(builtin_runs["electrical"], 1, "nano33ble", root / "proj", compile=False,
                        runtime="compiled")
    proj = res.project_dir
    stubs = root / "stubs"
    stubs.mkdir()
    (stubs / "Arduino.h").write_text(ARDUINO_H)
    (root / "shim.cpp").write_text(SHIM_CPP)
    objs = []
    for c in sorted((proj / "src").glob("*.c")):
        o = root / (c.stem + ".o")
        r = subprocess.run(["gcc", "-std=c99", "-O2", "-Wall", "-Wextra", "-Werror", "-I", str(proj / "include"),
                            "-c", str(c), "-o", str(o)], capture_output=True, text=True)
        assert r.returncode == 0, (c.name, r.stderr[-3000:])
        objs.append(str(o))
    exe = root / "fw"
    r = subprocess.run(["g++", "-std=c++11", "-O1", "-Wall", "-Wextra", "-Werror", "-I", str(stubs),
                        "-I", str(proj / "include"), *sorted(str(p) for p in (proj / "src").glob("*.cpp")),
                        str(root / "shim.cpp"),
                        *objs, "-o", str(exe)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-3000:]
    return res, exe


def test_arduino_project_has_no_tflm(arduino_project):
    res, _ = arduino_project
    ini = (res.project_dir / "platformio.ini").read_text()
    assert "lib_deps" not in ini and "TF_LITE" not in ini and "[env:nano33ble]" in ini
    assert not (res.project_dir / "src" / "model_data.cpp").exists()
    for p in res.project_dir.rglob("*"):
        if p.is_file():
            assert "tensorflow/lite" not in p.read_text(), p
    manifest = json.loads((res.project_dir / "fedtiny_build.json").read_text())
    assert manifest["runtime"] == "compiled" and manifest["clock"] == "device"


def test_arduino_project_benches_like_a_board(arduino_project, builtin_runs, tmp_path):
    from fedtiny.bench import bench_device
    from fedtiny.trainer.tflm import run_int8

    res, exe = arduino_project
    run = builtin_runs["electrical"]
    ddir = run / "devices" / "dev01"
    split = np.load(ddir / "test_split.npz")
    model = (ddir / "model_int8.tflite").read_bytes()
    scores = run_int8(model, split["x_int8"])
    dev = OnPty(exe, tmp_path / "err.txt")
    try:
        boot = dev.ask(b"")
        assert isinstance(boot[0], P.Banner) and boot[0].clock == "device" and boot[0].board == "nano33ble"
        assert boot[0].arena_bytes == res.arena_bytes
        b = dev.ask(b"info\n")[0]
        # the error paths, as the emulator and the TFLM sketch answer them
        e = dev.ask(cmd("frobnicate"))
        assert [type(m) for m in e] == [P.Error, P.Ready] and e[0].code == "bad_cmd"
        assert dev.ask(cmd("run now"))[0].code == "bad_cmd"
        w = int(np.prod(split["x_int8"].shape[1:]))
        e = dev.ask(P.encode_command("infer", np.zeros(4, np.int8)))[0]
        assert (e.code, e.detail) == ("bad_len", f"expected {w} bytes, got 4")
        e = dev.ask(P.encode_command("infer", np.zeros(P.INFER_MAX_PAYLOAD, np.int8)))[0]
        assert (e.code, e.detail) == ("bad_len", f"expected {w} bytes, got {P.INFER_MAX_PAYLOAD}")
        assert dev.ask(cmd("infer " + "00" * (P.INFER_MAX_PAYLOAD + 1)))[0].code == "too_long"
        assert dev.ask(cmd("infer 0g"))[0].code == "bad_payload"
        good = P.encode_command("info")
        assert dev.ask(good[:-2] + (b"0" if good[-2:-1] != b"0" else b"1") + b"\n")[0].code == "bad_crc"
        assert dev.ask(b"x" * (P.CMD_MAX_LINE + 5) + b"\n")[0].code == "too_long"
        for i in (0, len(scores) - 1):
            m = dev.ask(P.encode_command("infer", split["x_int8"][i]))[0]
            assert m.scores == tuple(int(v) for v in scores[i]) and m.pred == int(split["pred_int8"][i])
        # reset: ready, then a new boot (banner, ready)
        assert dev.ask(cmd("reset")) == [P.Ready()]
        assert dev.ask(b"") == [b, P.Ready()]
        # the host bench, as on a board: every decision, every streamed window's scores
        r = bench_device(dev.port, run, 1, stream=len(scores), timeout=5, reset=True)
        assert r.ok and r.clock == "device" and r.n == res.test_samples == len(scores)
        assert [s["pred"] for s in r.samples] == [int(p) for p in split["pred_int8"]]
        assert r.stream["max_score_lsb_diff"] == 0 and not r.stream["decision_mismatches"]
        assert [s["scores"] for s in r.stream["samples"]] == scores.astype(int).tolist()
        assert dev.err.name and "shim: restart" in dev.errlog.read_text()
    finally:
        dev.close()
