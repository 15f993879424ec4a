"""A probe firmware for qemu-m4: per embedded test window, the front end's int8 model input, the
model's int8 scores and the instructions each took, read back over the UART.

``probe(project)`` takes a generated qemu-m4 project (``fedtiny build --board qemu-m4``), compiles
a copy in which the protocol application (src/fedtiny_app.c) is replaced by ``PROBE_C`` (the same
ft_frontend_config.h, test_data.c, ft_model.c and board support, the same arm-none-eabi-gcc
flags), runs it on QEMU (-icount shift=0: SysTick counts 40 instructions a tick; the probe restarts SysTick
before each window, so a count is a whole number of ticks that depends only on the code, the same
on every run) and returns one ``ProbeWindow`` per embedded window. The firmware waits for one byte before
it starts, so no line is written before the host listens. Used by the qemu-m4 parity test and by
benchmarks/frontend_cost.py.
"""
from __future__ import annotations

import os
import select
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import CodegenError

PROBE_C = r"""/* probe.c: front end + model on every embedded test window (fedtiny.codegen.probe). */
#include <stdint.h>
#include <string.h>
#include "ft_board_config.h"
#include "ft_board.h"
#include "ft_model.h"
#include "ft_frontend_config.h"
#include "test_data.h"

static char g_line[8 + 24 + 2 * (FT_MODEL_INPUT_BYTES + FT_MODEL_OUTPUT_BYTES) + 8];
static int8_t g_in[FT_MODEL_INPUT_BYTES];
static int8_t g_out[FT_MODEL_OUTPUT_BYTES];
#if FT_LIVE && FT_FRONTEND_KIND == FT_FRONTEND_RAW
#include "fedtiny_protocol.h"
#include "fedtiny_config.h"
static int16_t g_raw[FT_MODEL_INPUT_BYTES];
#endif

static int put_u(char* s, int p, uint32_t v) {
  char t[12];
  int n = 0;
  do { t[n++] = (char)('0' + (int)(v % 10u)); v /= 10u; } while (v != 0u);
  while (n > 0) s[p++] = t[--n];
  s[p++] = ' ';
  return p;
}

static int put_hex(char* s, int p, const int8_t* v, int n) {
  static const char digits[] = "0123456789abcdef";
  for (int i = 0; i < n; ++i) {
    const uint8_t b = (uint8_t)v[i];
    s[p++] = digits[b >> 4];
    s[p++] = digits[b & 15u];
  }
  s[p++] = ' ';
  return p;
}

/* SysTick's current value register (Cortex-M4, ARMv7-M). Under -icount a write re-phases the
 * counter to the write's instruction (QEMU restarts its timer from the current virtual time), so a
 * count taken after it depends only on the instructions executed, not on when the start byte came
 * (the clock had run for a real-time-dependent while before it: +-1 tick otherwise). */
#define PROBE_SYST_CVR (*(volatile uint32_t*)0xE000E018u)

static void probe_all(void) {
  for (int i = 0; i < FT_N_TEST; ++i) {
#if FT_LIVE && FT_FRONTEND_KIND == FT_FRONTEND_RAW
    /* a live raw firmware quantizes its int16 samples first (ft_frontend_raw): timed on this
     * window's samples (its int8 codes back in int16 counts), so a live window's cost is counted */
    for (int k = 0; k < FT_MODEL_INPUT_BYTES; ++k)
      g_raw[k] = (int16_t)((g_fedtiny_test_x[(long)i * FT_MODEL_INPUT_BYTES + k] - FT_INPUT_ZERO_POINT) *
                           (double)FT_INPUT_SCALE * 32767.0);
#endif
    PROBE_SYST_CVR = 0u;
    const uint32_t t0 = ft_board_ticks();
#if FT_FRONTEND_KIND == FT_FRONTEND_RAW
#if FT_LIVE
    ft_frontend_raw(g_raw, FT_MODEL_INPUT_BYTES, FT_INPUT_SCALE, FT_INPUT_ZERO_POINT, g_in);
#endif
    memcpy(g_in, g_fedtiny_test_x + (long)i * FT_MODEL_INPUT_BYTES, FT_MODEL_INPUT_BYTES);
#else
    ft_frontend_run(&kFtFrontend, g_fedtiny_test_x + (long)i * FT_TEST_WINDOW_VALUES, 0, g_in);
#endif
    const uint32_t t1 = ft_board_ticks();
    ft_model_invoke(g_in, g_out);
    const uint32_t t2 = ft_board_ticks();
    int p = 0;
    g_line[p++] = '@';
    g_line[p++] = ' ';
    p = put_u(g_line, p, (uint32_t)i);
    p = put_u(g_line, p, ((t1 - t0) & FT_BOARD_TICK_MASK) * (uint32_t)FT_LATENCY_PER_TICK);
    p = put_u(g_line, p, ((t2 - t1) & FT_BOARD_TICK_MASK) * (uint32_t)FT_LATENCY_PER_TICK);
    p = put_hex(g_line, p, g_in, FT_MODEL_INPUT_BYTES);
    p = put_hex(g_line, p, g_out, FT_MODEL_OUTPUT_BYTES);
    g_line[p - 1] = '\n';
    ft_board_write(g_line, p);
  }
  ft_board_write("@end\n", 5);
  ft_board_flush();
}

void ft_app_setup(void) {
#if FT_LIVE && FT_FRONTEND_KIND == FT_FRONTEND_RAW
  (void)kFtClassNames;
#endif
  ft_board_init();
}

void ft_app_poll(void) {
  if (ft_board_read() >= 0) probe_all();
}
"""


@dataclass(frozen=True)
class ProbeWindow:
    index: int
    frontend_instructions: int
    model_instructions: int
    model_input: np.ndarray     # int8
    scores: np.ndarray          # int8


def build_probe(project: Path, out: Path) -> Path:
    """Compile the probe from ``project``'s files into ``out``; returns the ELF."""
    from . import armgcc
    from .boards import load_board

    board = load_board("qemu-m4")
    project, out = Path(project), Path(out)
    if out.exists():
        shutil.rmtree(out)
    shutil.copytree(project, out, ignore=shutil.ignore_patterns("build", "*.map"))
    (out / "src" / "fedtiny_app.c").unlink()
    (out / "src" / "probe.c").write_text(PROBE_C)
    srcs = armgcc.sources(str(p.relative_to(out)) for p in out.rglob("*.c"))
    armgcc.compile_project(out, board, srcs)
    return out / armgcc.ELF


def _lines(fd: int, timeout: float) -> list[str]:
    buf, lines = b"", []
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise CodegenError(f"the probe firmware did not finish within {timeout:g} s "
                               f"({len(lines)} lines read)")
        r, _, _ = select.select([fd], [], [], min(left, 1.0))
        if not r:
            continue
        buf += os.read(fd, 65536)
        while b"\n" in buf:
            line, buf = buf.split(b"\n", 1)
            text = line.decode(errors="replace").strip()
            if text == "@end":
                return lines
            if text.startswith("@ "):
                lines.append(text[2:])


def run_probe(elf: Path, timeout: float = 60.0) -> list[ProbeWindow]:
    """Run the probe ELF on QEMU (stopped again in every case) and parse its lines."""
    import termios
    import tty

    from .boards import load_board
    from .qemu import QemuBoard

    q = QemuBoard(Path(elf), load_board("qemu-m4"))
    try:
        q.start()
        fd = os.open(str(q.port), os.O_RDWR | os.O_NOCTTY)
        try:
            tty.setraw(fd, termios.TCSANOW)
            time.sleep(0.2)
            os.write(fd, b"g")
            lines = _lines(fd, timeout)
        finally:
            os.close(fd)
    finally:
        q.stop()
    out = []
    for text in lines:
        i, fe, model, x, y = text.split()
        out.append(ProbeWindow(int(i), int(fe), int(model), np.frombuffer(bytes.fromhex(x), np.int8).copy(),
                               np.frombuffer(bytes.fromhex(y), np.int8).copy()))
    return out


def probe(project: Path, timeout: float = 60.0) -> list[ProbeWindow]:
    """Build the probe of ``project`` in a temporary folder and run it on QEMU (at least one window,
    else CodegenError)."""
    with tempfile.TemporaryDirectory(prefix="fedtiny-probe-") as tmp:
        windows = run_probe(build_probe(project, Path(tmp) / "probe"), timeout)
    if not windows:
        raise CodegenError("the probe firmware reported no test window")
    return windows


def tools_missing() -> str | None:
    """Why the probe cannot run on this machine (qemu-m4's compiler or QEMU is not installed, with
    the packages to install), or None when it can."""
    from .armgcc import find_tool
    from .boards import load_board

    board = load_board("qemu-m4")
    missing = [t for t in (str(board.toolchain["cc"]), str(board.qemu["system"])) if find_tool(t) is None]
    if not missing:
        return None
    pkgs = list(board.toolchain.get("debian_packages", [])) + list(board.qemu.get("debian_packages", []))
    return f"{' and '.join(missing)} not installed (apt-get install {' '.join(pkgs)})"
