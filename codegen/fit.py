"""Does a device's firmware fit its board? Flash and RAM accounting with stated allowances.

Flash: model bytes + embedded test data (window bytes + 1 label byte each) + the board file's
runtime allowance (Arduino core + TFLM interpreter and kernels) <= the board's flash budget.
RAM: tensor arena + the sketch's own buffers (computed from the protocol sizes) + the board file's
runtime allowance (core statics, stacks, interpreter objects) <= the board's RAM budget.

Arena: the host tflite-micro figure (64-bit, an upper bound for 32-bit boards) plus
``ARENA_MARGIN_FRACTION`` and ``ARENA_MARGIN_BYTES``, rounded up to 16: optimized kernels
(CMSIS-NN, ESP-NN) may request scratch buffers the host's reference kernels do not.
"""
from __future__ import annotations

from dataclasses import dataclass

from fedtiny.firmware import protocol as P

from .boards import Board
from .errors import CodegenError

ARENA_MARGIN_FRACTION = 0.25
ARENA_MARGIN_BYTES = 1024
ARENA_MARGIN_TEXT = f"+{int(ARENA_MARGIN_FRACTION * 100)}% + {ARENA_MARGIN_BYTES} B"
DETAIL_BUFFERS = 2 * 96          # g_init_error, g_detail in main.cpp
LINE_READER_OVERHEAD = 16        # ints beside the line buffer in ft_line_reader_t
LATENCY_BYTES = 4                # one 32-bit long per embedded window


def arena_with_margin(host_arena: int) -> int:
    raw = host_arena * (1.0 + ARENA_MARGIN_FRACTION) + ARENA_MARGIN_BYTES
    return int(-(-int(round(raw)) // 16) * 16)


def sketch_buffer_bytes(n_test: int) -> int:
    """Static buffers of main.cpp besides the arena: line reader, output line, infer payload,
    detail strings, latency array."""
    return (P.CMD_MAX_LINE + LINE_READER_OVERHEAD + P.OUT_MAX_LINE + P.INFER_MAX_PAYLOAD
            + DETAIL_BUFFERS + LATENCY_BYTES * max(1, n_test))


@dataclass(frozen=True)
class Fit:
    n_test: int
    model_bytes: int
    test_bytes: int
    runtime_flash: int
    flash_budget: int
    arena_bytes: int
    buffer_bytes: int
    runtime_ram: int
    ram_budget: int

    @property
    def flash_used(self) -> int:
        return self.model_bytes + self.test_bytes + self.runtime_flash

    @property
    def ram_used(self) -> int:
        return self.arena_bytes + self.buffer_bytes + self.runtime_ram


def _b(n: int) -> str:
    return f"{n:,} B"


def plan_fit(board: Board, device: int, model_bytes: int, window_bytes: int, available: int,
             requested: int | None, arena_bytes: int) -> Fit:
    """Choose how many test windows to embed (all available, capped by ``requested`` and by
    what flash and RAM leave) and check the fit. Raises CodegenError naming every number."""
    bud = board.budget
    flash_budget, ram_budget = int(bud["flash_bytes"]), int(bud["ram_bytes"])
    rt_flash, rt_ram = int(bud["runtime_flash_bytes"]), int(bud["runtime_ram_bytes"])
    if requested is not None and requested < 0:
        raise CodegenError(f"--test-samples must be >= 0 (got {requested})")
    want = available if requested is None else min(requested, available)
    per_window = window_bytes + 1
    flash_room = flash_budget - model_bytes - rt_flash
    ram_room = ram_budget - arena_bytes - rt_ram - sketch_buffer_bytes(0)
    n = max(0, min(want, flash_room // per_window if flash_room > 0 else 0,
                   ram_room // LATENCY_BYTES + 1 if ram_room > 0 else 0))
    if want > 0 and n == 0:
        n = 1  # report the smallest useful build in the error below
    fit = Fit(n, model_bytes, n * per_window, rt_flash, flash_budget, arena_bytes,
              sketch_buffer_bytes(n), rt_ram, ram_budget)
    where = f"device {device} does not fit {board.name}"
    if fit.flash_used > flash_budget:
        raise CodegenError(
            f"{where} flash: model {_b(model_bytes)} + test data {_b(fit.test_bytes)} ({n} windows) "
            f"+ runtime allowance {_b(rt_flash)} = {_b(fit.flash_used)} > flash budget {_b(flash_budget)}")
    if fit.ram_used > ram_budget:
        raise CodegenError(
            f"{where} RAM: arena {_b(arena_bytes)} + sketch buffers {_b(fit.buffer_bytes)} "
            f"+ runtime allowance {_b(rt_ram)} = {_b(fit.ram_used)} > RAM budget {_b(ram_budget)}")
    return fit
