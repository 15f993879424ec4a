"""The live firmware's application compiled for the host (gcc) with a stub board whose serial port
can block while the sampling timer keeps running, as on a real board when the host stops reading.

The project is a real ``fedtiny build --input sensor --sensor sim`` project (qemu-m4 board,
not compiled for Arm here); src/*.c (fedtiny_app.c, ft_model.c, ft_stream.c, ft_sensor_sim.c, the
recording, the test data) are compiled with the host gcc together with ``STUB_BOARD`` below. Time
is counted in sample periods: the stub's timer calls ft_stream_tick() once per period while the
sampler runs; waiting (ft_board_idle) lasts one period; a write "blocks" for a given number of
periods after a given byte (the host stall). Commands arrive at given periods. Everything is
deterministic, so the counts are exact. (On QEMU a stalled host freezes the whole machine,
timer included; see tests/test_live_qemu.py.)
"""
from __future__ import annotations

import shutil
import subprocess

import numpy as np
import pytest

from fedtiny.firmware import protocol as P

pytestmark = pytest.mark.skipif(shutil.which("gcc") is None, reason="needs gcc")
HOP = 20

STUB_BOARD = r"""
/* stub board: argv = stall_at_byte stall_periods "cmd@period" ... */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "ft_board.h"
#include "ft_stream.h"

static long g_period, g_bytes, g_stall_at = -1, g_stall_periods;
static int g_running;
static char** g_cmds; static int g_ncmds, g_cmd, g_pos;

static void elapse(long periods) {
  for (long k = 0; k < periods; ++k) { g_period++; if (g_running) ft_stream_tick(); }
}
void ft_board_init(void) {}
int ft_board_read(void) {
  if (g_cmd >= g_ncmds) return -1;
  const char* c = g_cmds[g_cmd];
  const char* at = strchr(c, '@');
  if (g_period < atol(at + 1)) return -1;
  if (c + g_pos < at) return (unsigned char)c[g_pos++];
  g_cmd++; g_pos = 0;
  return '\n';
}
void ft_board_write(const char* data, int n) {
  fwrite(data, 1, (size_t)n, stdout);
  for (int i = 0; i < n; ++i) if (++g_bytes == g_stall_at) elapse(g_stall_periods);
}
void ft_board_flush(void) { fflush(stdout); }
uint32_t ft_board_ticks(void) { return (uint32_t)g_period; }
void ft_board_reset(void) { exit(3); }
int ft_board_sampler_start(long rate_hz) { (void)rate_hz; g_running = 1; return 0; }
void ft_board_sampler_stop(void) { g_running = 0; }
void ft_board_idle(void) { elapse(1); }

int main(int argc, char** argv) {
  g_stall_at = atol(argv[1]); g_stall_periods = atol(argv[2]);
  g_cmds = argv + 3; g_ncmds = argc - 3;
  ft_app_setup();
  while (g_cmd < g_ncmds) { ft_app_poll(); elapse(1); }
  ft_app_poll();
  return 0;
}
"""


@pytest.fixture(scope="module")
def host_fw(small_run, tmp_path_factory):
    """(run device, recording, executable) of device 0's live firmware built for the host."""
    from fedtiny.bench.rundata import load_run_device
    from fedtiny.codegen.build import build_project
    from fedtiny.codegen.live import recording_from_run
    from fedtiny.codegen.tflite_model import read_model

    root = tmp_path_factory.mktemp("live-host")
    res = build_project(small_run, 0, "qemu-m4", root / "fw", test_samples=1, input="sensor", hop=HOP,
                        compile=False)
    proj = res.project_dir
    (proj / "stub_board.c").write_text(STUB_BOARD)
    srcs = sorted(str(p) for p in (proj / "src").glob("*.c")) + [str(proj / "stub_board.c")]
    exe = root / "live"
    r = subprocess.run(["gcc", "-std=gnu99", "-O1", "-Wall", "-Wextra", "-Werror", "-I", str(proj / "include"),
                        *srcs, "-o", str(exe)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-3000:]
    rd = load_run_device(small_run, 0)
    facts = read_model(rd.model_bytes)
    units = facts.input.scale * (rd.x_int8.astype(np.float64) - facts.input.zero_point)
    return rd, recording_from_run(units, None), exe


def _run(exe, stall_at: int, stall_periods: int, *cmds: str) -> list:
    out = subprocess.run([str(exe), str(stall_at), str(stall_periods), *cmds], capture_output=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    msgs = [P.parse_line(line) for line in out.stdout.splitlines(keepends=True)]
    assert all(m is not None for m in msgs)
    return msgs


def test_capture_counts_what_a_blocked_port_loses(host_fw):
    from test_live_qemu import _frames_and_gaps

    rd, rec, exe = host_fw
    ch = rec.shape[1]
    fifo = rec.shape[0] // len(rd.y) + HOP                         # window + hop frames
    msgs = _run(exe, 3000, 400, "capture 900@1")
    start = msgs.index(next(m for m in msgs if isinstance(m, P.Stream)))
    cap = msgs[start:]
    end = cap[-2]
    assert isinstance(end, P.CaptureEnd) and cap[-1] == P.Ready()
    got, gaps, nxt = _frames_and_gaps(cap, ch)
    assert nxt == 900 and end.sent + end.dropped == 900 and len(got) == end.sent
    # the port blocked for 400 sample periods: the FIFO absorbed at most its size, the rest is lost
    assert len(gaps) == 1 and 400 - fifo <= end.dropped <= 400
    tiled = np.tile(rec, (2, 1))
    for i, frame in got.items():
        assert frame == tuple(int(v) for v in tiled[i]), i
    # without a stall nothing is lost, and stop ends an endless capture with what was stored
    msgs = _run(exe, -1, 0, "capture 0@1", "stop@500")
    end = msgs[-2]
    assert isinstance(end, P.CaptureEnd) and end.dropped == 0 and 450 <= end.sent <= 500


def test_live_counts_drops_and_skips_the_windows_they_touch(host_fw):
    from test_live_qemu import _host_decisions

    rd, rec, exe = host_fw
    win = rec.shape[0] // len(rd.y)
    msgs = _run(exe, 1500, 333, "live@1", "stop@4200")
    stream = next(m for m in msgs if isinstance(m, P.Stream))
    events = [m for m in msgs if isinstance(m, P.Event)]
    beats = [m for m in msgs if isinstance(m, P.Beat)]
    assert msgs[-1] == P.Ready() and stream.hop == HOP and len(beats) == 2
    assert beats[0].n == 2000 and beats[1].n == 4000
    lost = beats[-1].dropped
    assert 333 - (win + HOP) <= lost <= 333 and beats[0].dropped in (0, lost)
    until = max(e.n for e in events)
    host = {n: (p, float(P._fixed6(s))) for n, p, s in _host_decisions(rd, rec, win, HOP, until)}
    assert len(events) >= 3 and until > 2000
    for e in events:      # every decision the board made is the host's on the same window
        assert (e.n - win) % HOP == 0 and host[e.n] == (e.pred, e.score), e


def test_stop_outside_live_and_bad_capture(host_fw):
    _, _, exe = host_fw
    msgs = _run(exe, -1, 0, "stop@1", "capture x@2", "capture@3")
    errs = [m for m in msgs if isinstance(m, P.Error)]
    assert [e.code for e in errs] == ["bad_args", "bad_args"]
    assert sum(isinstance(m, P.Ready) for m in msgs) == 4          # boot + one per command


def test_build_refuses_inference_longer_than_the_hop():
    from fedtiny.codegen.errors import CodegenError
    from fedtiny.codegen.live import LiveSpec, check_budget

    spec = LiveSpec(2000, 6, 40, 1, 500_000, "sim", 1 / 32767, "model")
    check_budget(spec, 500_000, "measured", "instructions")
    with pytest.raises(CodegenError, match=r"inference takes 500,001 instructions \(measured\) but a hop of 1 "
                                           r"samples at 2000 Hz lasts 500,000 instructions"):
        check_budget(spec, 500_001, "measured", "instructions")


def test_sensor_errors_are_one_line(small_run, tmp_path):
    """A rate the board's sensor cannot give, a board file naming an unknown sensor, a sensor the
    board lacks: one error line, exit 2, nothing written."""
    import json

    from click.testing import CliRunner

    from fedtiny.cli import main
    from fedtiny.codegen.boards import load_board

    bad = dict(load_board("qemu-m4").data)
    bad["sensor"] = {"default": "sim", "sources": {"sim": {}, "sonar": {}}}
    (tmp_path / "bad.json").write_text(json.dumps(bad))
    cases = [(["--board", "nano33ble", "--runtime", "compiled"], "the imu sensor of nano33ble gives 1..100 Hz, "
                                                                 "the model needs 2000 Hz"),
             (["--board", str(tmp_path / "bad.json")], "names an unknown sensor 'sonar'"),
             (["--board", "qemu-m4", "--sensor", "adc"], "board qemu-m4 has no adc sensor"),
             (["--board", "esp32dev", "--runtime", "compiled", "--hop", "500"], "--hop must be 1..40 samples")]
    for args, needle in cases:
        r = CliRunner().invoke(main, ["build", "--device", "0", "--run", str(small_run), "--input", "sensor",
                                      "--out", str(tmp_path / "fw"), *args])
        lines = r.output.strip().splitlines()
        assert r.exit_code == 2 and len(lines) == 1 and lines[0].startswith("error:") and needle in lines[0], r.output
        assert not (tmp_path / "fw").exists()


USER_SENSOR = r"""
/* what a user writes: frame c of sample k is k * 10 + c */
#include "ft_sensor.h"
static int g_k;
int ft_sensor_begin(long rate_hz, int channels) { (void)rate_hz; (void)channels; g_k = 0; return 0; }
int ft_sensor_read(int16_t* frame) {
  for (int c = 0; c < 6; ++c) frame[c] = (int16_t)(g_k * 10 + c);
  g_k++;
  return 0;
}
"""


def test_user_sensor_file_weak_default_and_filled_in(small_run, tmp_path):
    """--sensor user: one commented file whose weak default has no sample (capture: one gap);
    a user's own ft_sensor_read replaces it without touching the generated files."""
    from fedtiny.codegen.build import build_project

    res = build_project(small_run, 0, "qemu-m4", tmp_path / "fw", test_samples=1, input="sensor",
                        sensor="user", hop=HOP, compile=False)
    proj = res.project_dir
    user_file = (proj / "src" / "ft_sensor_user.c").read_text()
    assert "__attribute__((weak)) int ft_sensor_read" in user_file and "the one file to fill in" in user_file
    (proj / "stub_board.c").write_text(STUB_BOARD)
    (tmp_path / "mine.c").write_text(USER_SENSOR)
    srcs = sorted(str(p) for p in (proj / "src").glob("*.c")) + [str(proj / "stub_board.c")]
    outs = {}
    for name, extra in (("weak", []), ("mine", [str(tmp_path / "mine.c")])):
        exe = tmp_path / name
        r = subprocess.run(["gcc", "-std=gnu99", "-O1", "-Wall", "-Wextra", "-Werror", "-I", str(proj / "include"),
                            *srcs, *extra, "-o", str(exe)], capture_output=True, text=True)
        assert r.returncode == 0, r.stderr[-3000:]
        outs[name] = _run(exe, -1, 0, "capture 50@1")
    weak = outs["weak"]
    assert [type(m) for m in weak[-4:]] == [P.Stream, P.Gap, P.CaptureEnd, P.Ready]
    assert weak[-3] == P.Gap(0, 50) and weak[-2] == P.CaptureEnd(0, 50)
    frames = [m for m in outs["mine"] if isinstance(m, P.Frames)]
    data = sum((m.data for m in frames), ())
    assert outs["mine"][-2] == P.CaptureEnd(50, 0)
    assert data == tuple(k * 10 + c for k in range(50) for c in range(6))


def test_sampling_timer_rate_must_divide_its_clock():
    """qemu-m4's TIMER0 counts the 25 MHz clock: 3 Hz cannot be given exactly, 2000 Hz can."""
    from fedtiny.codegen.boards import load_board
    from fedtiny.codegen.errors import CodegenError
    from fedtiny.codegen.live import live_spec

    board = load_board("qemu-m4")
    info = {"frontend": {"kind": "raw", "window": 40, "channels": 6, "rate_hz": 2000.0}}
    assert live_spec(board, info, 40, 6, None, None).hop == 20
    with pytest.raises(CodegenError, match=r"cannot give exactly 3 Hz"):
        live_spec(board, {"frontend": {**info["frontend"], "rate_hz": 3.0}}, 40, 6, None, None)
    with pytest.raises(CodegenError, match="records no sample rate"):
        live_spec(board, {}, 40, 6, None, None)
    with pytest.raises(CodegenError, match="1..16 channels"):
        live_spec(board, info, 40, 17, None, None)
