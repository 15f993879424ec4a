"""Estimated inference time on a PlatformIO board from Cortex-M4 instruction counts.

No Nano 33 BLE or ESP32 runs here, so a live build for them estimates the time of one live
inference: the board's front end + model as compiled-runtime C, run on qemu-m4 by the probe
(``codegen.probe``: instructions of the front end and of the model per embedded test window),
converted to microseconds with the board file's ``timing`` section:

    us = ceil((fe * f[compiled] + model * f[runtime]) * cycles_per_instruction / clock_mhz)

``fe`` and ``model`` are the probe's instruction counts of one window, ``f`` the section's
``runtime_factor`` (instructions of that runtime on the board per instruction the probe counted;
the front end is the same generated C in both runtimes, so it always takes the compiled factor),
``cycles_per_instruction`` the board's cycles per counted instruction and ``clock_mhz`` the board's
clock. The build takes the worst window.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from .boards import Board
from .errors import CodegenError


@dataclass(frozen=True)
class Timing:
    """A board file's ``timing`` section, checked."""

    clock_mhz: float
    cycles_per_instruction: float
    runtime_factor: dict
    why: str


def board_timing(board: Board) -> Timing | None:
    """The board's ``timing`` section, or None when the board file has none. A malformed one is a
    CodegenError naming the field."""
    sec = board.data.get("timing")
    if sec is None:
        return None
    where = f"board file {board.path}: timing"
    try:
        cpi = float(sec["cycles_per_instruction"])
        factors = {str(k): float(v) for k, v in dict(sec["runtime_factor"]).items()}
        clock = float(board.data["clock_mhz"])
        why = str(sec["why"])
    except (KeyError, TypeError, ValueError) as e:
        raise CodegenError(f"{where} needs cycles_per_instruction, runtime_factor {{runtime: factor}} and why "
                           f"(and the board's clock_mhz): {e}") from None
    if not all(math.isfinite(v) and v > 0 for v in (cpi, clock, *factors.values())) or "compiled" not in factors:
        raise CodegenError(f"{where}: cycles_per_instruction, clock_mhz and every runtime_factor must be positive, "
                           f"and runtime_factor must name compiled")
    return Timing(clock, cpi, factors, why)


def estimate_us(frontend_instructions: int, model_instructions: int, cycles_per_instruction: float,
                clock_mhz: float, frontend_factor: float = 1.0, model_factor: float = 1.0) -> int:
    """Microseconds of one inference, rounded up:
    ceil((fe * frontend_factor + model * model_factor) * cycles_per_instruction / clock_mhz)."""
    cycles = (int(frontend_instructions) * float(frontend_factor)
              + int(model_instructions) * float(model_factor)) * float(cycles_per_instruction)
    return int(math.ceil(cycles / float(clock_mhz) - 1e-9))


def worst_estimate_us(windows, timing: Timing, runtime: str) -> int:
    """The largest ``estimate_us`` over the probe's windows (``ProbeWindow``s) for ``runtime``."""
    if runtime not in timing.runtime_factor:
        raise CodegenError(f"the board's timing section has no runtime_factor for the {runtime} runtime")
    fe_f, model_f = timing.runtime_factor["compiled"], timing.runtime_factor[runtime]
    return max(estimate_us(w.frontend_instructions, w.model_instructions, timing.cycles_per_instruction,
                           timing.clock_mhz, fe_f, model_f) for w in windows)
