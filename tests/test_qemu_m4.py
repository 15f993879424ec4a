"""The generated firmware on an emulated Cortex-M4: board qemu-m4 (QEMU mps2-an386).

``fedtiny build --board qemu-m4`` compiles the compiled-runtime project with arm-none-eabi-gcc;
QEMU runs the ELF with -icount shift=0 and UART0 on a pty; ``fedtiny bench`` talks to it as to a
board. Checked here:

* SysTick under -icount shift=0 advances once per 40 instructions (a calibration program built
  from the same board support times loops of known instruction counts);
* on small runs of BOTH built-in fleets: the Cortex-M4 build (SMLAD dot products) returns the
  tflite-micro scores bit for bit on every test window (``infer``), the banner says clock=icount,
  the error paths answer as the emulator does, ``reset`` reboots, and ``fedtiny bench`` (reset,
  embedded windows, streamed windows) passes with every decision equal to the run's;
* ``fedtiny flash --board qemu-m4`` prints the pty, serves ``fedtiny bench`` and is stopped by
  ``fedtiny flash --stop`` (its QEMU process ends);
* a compile that fails leaves the previous project byte for byte (the build compiles in the
  temporary folder before swapping it in).

Every QEMU started here is stopped in a ``finally`` (SIGTERM, then SIGKILL), every wait is
bounded, and the pty descriptors are closed. The tests skip only when the toolchain is missing
outside CI; with CI=true a missing toolchain is a failure (``.ci/run`` installs it).
"""
from __future__ import annotations

import json
import os
import select
import shutil
import signal
import subprocess
import sys
import time
import tty
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from fedtiny.firmware import protocol as P

TOOLS = ("arm-none-eabi-gcc", "arm-none-eabi-size", "qemu-system-arm")
MISSING = [t for t in TOOLS if shutil.which(t) is None]
IN_CI = os.environ.get("CI", "").lower() == "true"
pytestmark = pytest.mark.skipif(bool(MISSING) and not IN_CI,
                                reason=f"needs {', '.join(MISSING)} (apt-get install gcc-arm-none-eabi "
                                       f"libnewlib-arm-none-eabi qemu-system-arm)")
N_EMBEDDED = 6                     # keep the firmware (and the 'run' command) small and quick
# Every wait below is for a line, a reply or an exit (progress); HANG_S only ends a hung test. With
# -icount the firmware's results are instruction counts, so no figure depends on the machine's load.
HANG_S = 300.0


@pytest.fixture(scope="module", autouse=True)
def toolchain():
    if MISSING:
        pytest.fail(f"CI=true but {', '.join(MISSING)} missing: .ci/run must install them")


class Pty:
    """Our end of QEMU's UART pty (raw), with bounded reads."""

    def __init__(self, path: str):
        self.fd = os.open(path, os.O_RDWR | os.O_NOCTTY)
        tty.setraw(self.fd)
        self.buf = b""

    def line(self, timeout: float = HANG_S) -> bytes:
        deadline = time.monotonic() + timeout
        while b"\n" not in self.buf:
            left = deadline - time.monotonic()
            assert left > 0, f"no line within {timeout}s; pending {self.buf[:200]!r}"
            r, _, _ = select.select([self.fd], [], [], min(left, 0.2))
            if r:
                self.buf += os.read(self.fd, 65536)
        line, _, self.buf = self.buf.partition(b"\n")
        return line + b"\n"

    def sync(self) -> None:
        """Align with the firmware: QEMU drops UART output until it sees the pty open, so the boot
        banner may come whole, cut or not at all, and at any time; whatever it printed precedes the
        reply to a command sent now. Send an unknown command and drop everything up to its error
        and the 'ready' after it (waits on lines, not on silence)."""
        os.write(self.fd, cmd("sync"))
        prev = None
        while True:
            msg = P.parse_line(self.line())
            if isinstance(msg, P.Ready) and getattr(prev, "code", None) == "bad_cmd":
                return
            prev = msg

    def until_ready(self, timeout: float = HANG_S) -> list:
        out = []
        while not out or not isinstance(out[-1], P.Ready):
            msg = P.parse_line(self.line(timeout))
            assert msg is not None
            out.append(msg)
        return out

    def ask(self, data: bytes, timeout: float = HANG_S) -> list:
        os.write(self.fd, data)
        return self.until_ready(timeout)

    def close(self) -> None:
        os.close(self.fd)


def cmd(text: str) -> bytes:
    return f"{text}{P.CRC_SEP}{P.crc16(text.encode()):04x}\n".encode()


# ----------------------------------------------------------------------------- SysTick calibration

CAL_C = r"""
#include <stdint.h>
#include "ft_board.h"
#include "ft_board_config.h"
/* N iterations of 'subs; bne': exactly 2 * N instructions */
static void spin(uint32_t n) {
  __asm volatile("1: subs %0, %0, #1\n\tbne 1b" : "+r"(n) : : "cc");
}
static void put(uint32_t v) {
  char s[12]; int n = 0;
  do { s[n++] = (char)('0' + v % 10u); v /= 10u; } while (v);
  while (n) { char c = s[--n]; ft_board_write(&c, 1); }
  ft_board_write(" ", 1);
}
void ft_app_setup(void) {
  ft_board_init();
  /* QEMU drops UART output while no one holds the pty open: measure once the host has spoken */
  while (ft_board_read() < 0) {}
  static const uint32_t sizes[3] = {50000u, 150000u, 650000u};
  for (int i = 0; i < 3; ++i) {
    uint32_t t0 = ft_board_ticks();
    spin(sizes[i]);
    put((ft_board_ticks() - t0) & FT_BOARD_TICK_MASK);
  }
  ft_board_write("\n", 1);
}
void ft_app_poll(void) {}
"""


def test_systick_counts_40_instructions_per_tick(tmp_path):
    from fedtiny.codegen.boards import load_board
    from fedtiny.codegen.compiled.project import board_config, firmware_dir
    from fedtiny.codegen.qemu import QemuBoard

    board = load_board("qemu-m4")
    fw = firmware_dir()
    inc = tmp_path / "include"
    inc.mkdir()
    (inc / "ft_board.h").write_text((fw / "compiled" / "ft_board.h").read_text())
    (inc / "fedtiny_protocol.h").write_text(P.render_c_header())
    (inc / "ft_board_config.h").write_text(board_config(board))
    (tmp_path / "cal.c").write_text(CAL_C)
    elf = tmp_path / "cal.elf"
    tc = board.toolchain
    r = subprocess.run(["arm-none-eabi-gcc", *tc["cflags"], "-I", str(inc), str(tmp_path / "cal.c"),
                        str(fw / "qemu-m4" / "board_qemu_m4.c"), str(fw / "qemu-m4" / "startup.c"),
                        "-T", str(fw / "qemu-m4" / tc["linker_script"]), *tc["ldflags"], "-o", str(elf)],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    q = QemuBoard(elf, board)
    try:
        q.start()
        pty = Pty(q.port)
        try:
            os.write(pty.fd, b"g")          # held in the pty until QEMU sees it connected and reads it
            ticks = [int(v) for v in pty.line().split()]
        finally:
            pty.close()
    finally:
        q.stop()
    assert not q.alive()
    per_tick = int(board.qemu["instructions_per_tick"])
    assert per_tick == 40
    # the differences cancel the call overhead: 2 * (150000 - 50000) and 2 * (650000 - 50000)
    for k, extra in ((1, 200_000), (2, 1_200_000)):
        measured = (ticks[k] - ticks[0]) * per_tick
        assert abs(measured - extra) <= per_tick, (ticks, measured, extra)
    assert abs(ticks[0] * per_tick - 100_000) <= 2 * per_tick + 200, ticks


# ----------------------------------------------------------------------------- the firmware, both fleets

@pytest.fixture(scope="module")
def qemu_builds(builtin_runs, tmp_path_factory):
    from fedtiny.codegen.build import build_project

    root = tmp_path_factory.mktemp("qemu_builds")
    out = {}
    for dataset, run in builtin_runs.items():
        res = build_project(run, 0, "qemu-m4", root / dataset, test_samples=N_EMBEDDED)
        assert res.compiled and res.runtime == "compiled" and res.sizes["text"] > 0, res
        out[dataset] = (run, res)
    return out


@pytest.mark.parametrize("dataset", ["electrical", "mechanical"])
def test_firmware_on_qemu_bit_exact_errors_reset_and_bench(dataset, qemu_builds):
    from fedtiny.bench import bench_device
    from fedtiny.codegen.boards import load_board
    from fedtiny.codegen.qemu import QemuBoard
    from fedtiny.trainer.tflm import run_int8

    run, res = qemu_builds[dataset]
    ddir = run / "devices" / "dev00"
    split = np.load(ddir / "test_split.npz")
    x, pred = split["x_int8"], split["pred_int8"]
    scores = run_int8((ddir / "model_int8.tflite").read_bytes(), x)
    info = json.loads((ddir / "device.json").read_text())
    w = int(np.prod(x.shape[1:]))
    q = QemuBoard(res.project_dir / "build" / "firmware.elf", load_board("qemu-m4"))
    try:
        q.start()
        assert q.port and q.port.startswith("/dev/")
        pty = Pty(q.port)
        try:
            pty.sync()
            b = pty.ask(cmd("info"))[-2]
            assert isinstance(b, P.Banner)
            assert (b.board, b.device_id, b.model_hash, b.clock, b.n_test) == (
                "qemu-m4", 0, info["model_sha256"], "icount", N_EMBEDDED)
            assert b.arena_bytes == res.arena_bytes
            assert b.threshold_origin == (info.get("threshold_origin") or "default")
            # bit-exact with tflite-micro on every test window, on the Cortex-M4 (SMLAD) build
            for i in range(len(x)):
                m = pty.ask(P.encode_command("infer", x[i]))
                assert [type(v) for v in m] == [P.InferResult, P.Ready], m
                assert m[0].scores == tuple(int(v) for v in scores[i]), (i, m[0].scores, scores[i])
                assert m[0].pred == int(pred[i])
                assert m[0].micros > 0 and m[0].micros % 40 == 0      # instructions, 40 per tick
            # error paths, as the emulator answers them
            assert pty.ask(cmd("frobnicate"))[0].code == "bad_cmd"
            assert pty.ask(cmd("info now"))[0].code == "bad_cmd"
            e = pty.ask(P.encode_command("infer", np.zeros(w + 1, np.int8)))[0]
            assert (e.code, e.detail) == ("bad_len", f"expected {w} bytes, got {w + 1}")
            e = pty.ask(P.encode_command("infer", np.zeros(P.INFER_MAX_PAYLOAD, np.int8)))[0]
            assert (e.code, e.detail) == ("bad_len", f"expected {w} bytes, got {P.INFER_MAX_PAYLOAD}")
            assert pty.ask(cmd("infer 0g"))[0].code == "bad_payload"
            good = P.encode_command("info")
            assert pty.ask(good[:-2] + (b"0" if good[-2:-1] != b"0" else b"1") + b"\n")[0].code == "bad_crc"
            assert pty.ask(b"x" * (P.CMD_MAX_LINE + 3) + b"\n")[0].code == "too_long"
            # built without --trainable-head: every head command is refused by name
            assert pty.ask(P.encode_command("head"))[0].code == "no_head"
            assert pty.ask(P.encode_command("htrain", args=(1, 0, 0.1, 0.5)))[0].code == "no_head"
            assert pty.ask(cmd("htrain 1"))[0].code == "bad_args"
            # run: the embedded windows, decisions and the device's own summary
            msgs = pty.ask(cmd("run"))
            assert [type(m) for m in msgs] == [P.Sample] * N_EMBEDDED + [P.Summary, P.Ready]
            assert [m.pred for m in msgs[:-2]] == [int(p) for p in pred[:N_EMBEDDED]]
            # reset: ready, then the board boots again (banner, ready) on the same pty
            assert pty.ask(cmd("reset")) == [P.Ready()]
            assert pty.until_ready() == [b, P.Ready()]
            assert pty.ask(b"info\n") == [b, P.Ready()]
        finally:
            pty.close()
        # the host bench, unchanged: reset first, embedded windows, then streamed ones
        r = bench_device(q.port, run, 0, stream=4, timeout=HANG_S, reset=True)
        assert r.ok and r.status == "ok" and r.clock == "icount" and r.board == "qemu-m4"
        assert r.threshold_origin_ok is True
        assert r.n == N_EMBEDDED and not r.decision_mismatches and not r.borderline
        assert [s["pred"] for s in r.samples] == [int(p) for p in pred[:N_EMBEDDED]]
        assert r.stream["max_score_lsb_diff"] == 0 and not r.stream["decision_mismatches"]
        assert r.latency_us["clock"] == "icount" and r.latency_us["min"] > 1000
    finally:
        q.stop()
    assert not q.alive()


def test_flash_serves_bench_and_stop_ends_qemu(qemu_builds, tmp_path):
    from fedtiny.codegen import cli as cgcli
    from fedtiny.codegen.qemu import STATE_FILE

    run, _ = qemu_builds["electrical"]
    r = CliRunner().invoke(cgcli.build, ["--device", "1", "--board", "qemu-m4", "--run", str(run),
                                         "--test-samples", str(N_EMBEDDED)])
    assert r.exit_code == 0, r.output
    assert "arm-none-eabi-gcc, not PlatformIO" in r.output and "ELF          text" in r.output
    proj = run / "firmware" / "dev01-qemu-m4"
    assert (proj / "build" / "firmware.elf").is_file() and (proj / "build.sh").is_file()
    fedtiny = [sys.executable, "-c", "from fedtiny.cli import run; run()"]
    flash = subprocess.Popen(fedtiny + ["flash", "--device", "1", "--board", "qemu-m4", "--run", str(run)],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             start_new_session=True)
    qemu_pid = None
    try:
        port = flash.stdout.readline().strip()
        assert port.startswith("/dev/"), (port, flash.stderr.read() if flash.poll() is not None else "")
        state = json.loads((proj / STATE_FILE).read_text())
        qemu_pid = int(state["pid"])
        assert state["port"] == port
        # a second flash of the same project refuses (one QEMU per project)
        again = CliRunner().invoke(cgcli.flash, ["--device", "1", "--board", "qemu-m4", "--run", str(run)])
        assert again.exit_code == 2 and "already runs" in again.output
        b = subprocess.run(fedtiny + ["bench", "--port", port, "--run", str(run), "--device", "1",
                                      "--out", str(tmp_path / "bench"), "--timeout", str(HANG_S)],
                           capture_output=True, text=True, timeout=2 * HANG_S)
        assert b.returncode == 0, b.stdout[-2000:] + b.stderr[-2000:]
        assert "icount" in b.stdout and "instr" in b.stdout
        assert "clock=icount" in b.stderr and "not microseconds" in b.stderr
        res = json.loads(next((tmp_path / "bench").glob("*.json")).read_text())
        assert res["clock"] == "icount" and res["n_mismatch"] == 0 if "n_mismatch" in res else True
        stop = CliRunner().invoke(cgcli.flash, ["--device", "1", "--board", "qemu-m4", "--run", str(run), "--stop"])
        assert stop.exit_code == 0 and f"pid {qemu_pid}" in stop.output, stop.output
        flash.wait(timeout=HANG_S)
        assert flash.returncode == 0, flash.stderr.read()
        assert not (proj / STATE_FILE).exists()
        assert not Path(f"/proc/{qemu_pid}").exists() or b"qemu" not in Path(f"/proc/{qemu_pid}/cmdline").read_bytes()
    finally:
        if flash.poll() is None:
            os.killpg(flash.pid, signal.SIGTERM)
            flash.wait(timeout=10)
        if qemu_pid is not None and Path(f"/proc/{qemu_pid}/cmdline").exists() and \
                b"qemu-system-arm" in Path(f"/proc/{qemu_pid}/cmdline").read_bytes():
            os.kill(qemu_pid, signal.SIGKILL)


def test_failed_compile_leaves_the_previous_project(small_run, tmp_path):
    from fedtiny.codegen.boards import load_board
    from fedtiny.codegen.build import build_project
    from fedtiny.codegen.errors import CodegenError

    run = small_run
    out = tmp_path / "proj"
    build_project(run, 2, "qemu-m4", out, test_samples=2)
    before = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    assert Path("build/firmware.elf") in before
    bad = json.loads(load_board("qemu-m4").path.read_text())
    bad["toolchain"]["cflags"] = bad["toolchain"]["cflags"] + ["-DFT_N_TEST=oops"]
    board_file = tmp_path / "bad-board.json"
    board_file.write_text(json.dumps(bad))
    with pytest.raises(CodegenError, match="arm-none-eabi-gcc failed"):
        build_project(run, 2, str(board_file), out, test_samples=3)
    after = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    assert after == before
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".proj.")]   # no temp folder left


# ----------------------------------------------------------------------------- front ends on the Cortex-M4

@pytest.mark.parametrize("kind", ["features", "spectrum"])
@pytest.mark.parametrize("dataset", ["electrical", "mechanical"])
def test_frontend_on_qemu_equals_host_on_every_window(dataset, kind, frontend_runs, tmp_path):
    """Every test window of device 0 embedded as int16 samples; the probe firmware (the project's
    own ft_frontend_config.h, test_data.c and ft_model.c, arm-none-eabi-gcc -mcpu=cortex-m4,
    codegen.probe) reads back the board's int8 model input and scores: both equal the host's
    (fedtiny.frontend, tflite-micro), so the decisions do. For the spectrum of the mechanical
    fleet the real firmware also runs 'run' under the bench: every decision equal."""
    from fedtiny.bench import bench_device
    from fedtiny.codegen.boards import load_board
    from fedtiny.codegen.build import build_project
    from fedtiny.codegen.probe import probe
    from fedtiny.codegen.qemu import QemuBoard
    from fedtiny.trainer.threshold import decide, dequantize

    run = frontend_runs[(dataset, kind)]
    ddir = run / "devices" / "dev00"
    split = np.load(ddir / "test_split.npz")
    info = json.loads((ddir / "device.json").read_text())
    x, out, pred = split["x_int8"], split["out_int8"], split["pred_int8"]
    res = build_project(run, 0, "qemu-m4", tmp_path / "proj")
    assert res.compiled and res.test_samples == len(x) >= 5
    got = probe(res.project_dir)
    assert [w.index for w in got] == list(range(len(x)))
    for w in got:
        assert np.array_equal(w.model_input, x[w.index].reshape(-1)), (w.index, w.model_input, x[w.index])
        assert np.array_equal(w.scores, out[w.index]), w.index
        assert w.frontend_instructions > 0 and w.model_instructions > 0
    board_pred = decide(dequantize(np.stack([w.scores for w in got]), info["output_scale"],
                                   info["output_zero_point"]), info["threshold"])
    assert np.array_equal(board_pred, pred)
    if (dataset, kind) == ("mechanical", "spectrum"):
        q = QemuBoard(res.project_dir / "build" / "firmware.elf", load_board("qemu-m4"))
        try:
            q.start()
            r = bench_device(q.port, run, 0, timeout=30, reset=True)
            assert r.ok and r.n == len(x) and not r.decision_mismatches
            assert [s["pred"] for s in r.samples] == [int(p) for p in pred]
        finally:
            q.stop()
        assert not q.alive()
