"""Render the firmware project's files from plain Python values (all logic here, none in Jinja).

Every function returns text; the same inputs give the same bytes (no timestamps, sorted nothing
that has an order of its own). ``sketch_context`` / ``render_sketch`` are separate so a golden
test can pin the sketch for a fixed op list and board.
"""
from __future__ import annotations

from pathlib import Path

import jinja2
import numpy as np

from .boards import Board

TEMPLATES = Path(__file__).resolve().parent / "templates"
PER_ROW = 12


def _env() -> jinja2.Environment:
    return jinja2.Environment(loader=jinja2.FileSystemLoader(str(TEMPLATES)),
                              undefined=jinja2.StrictUndefined, keep_trailing_newline=True,
                              trim_blocks=True, lstrip_blocks=True, autoescape=False)


def render(template: str, **context) -> str:
    return _env().get_template(template).render(**context)


def c_float(x: float) -> str:
    """A C float literal that rounds to the same float32 as ``x`` (shortest repr + 'f')."""
    s = repr(float(x))
    if s in ("inf", "-inf", "nan"):
        raise ValueError(f"cannot write {s} as a C literal")
    if not any(c in s for c in ".e"):
        s += ".0"
    return s + "f"


def c_string(s: str) -> str:
    out = []
    for ch in str(s):
        if ch in '"\\':
            out.append("\\" + ch)
        elif " " <= ch <= "~":
            out.append(ch)
        else:
            out.append("?")
    return '"' + "".join(out) + '"'


def rows(values, fmt) -> list[str]:
    """Comma-terminated rows of PER_ROW formatted values (at least one row: ``0,`` if empty)."""
    vals = [fmt(v) for v in values] or ["0"]
    return [" ".join(f"{v}," for v in vals[i:i + PER_ROW]) for i in range(0, len(vals), PER_ROW)]


def model_files(model: bytes, device: int, sha256: str) -> dict[str, str]:
    ctx = dict(device=device, model_sha256=sha256, model_len=len(model),
               model_rows=rows(model, lambda b: f"0x{b:02x}"))
    return {"include/model_data.h": render("model_data.h.j2", **ctx),
            "src/model_data.cpp": render("model_data.cpp.j2", **ctx)}


def test_files(x: np.ndarray, y: np.ndarray, device: int, window_values: int,
               source: str = "src/test_data.cpp") -> dict[str, str]:
    """The test windows as ``include/test_data.h`` and ``source`` (valid C and C++): int8 model
    inputs, or (an int16 ``x``) the samples a front end runs on (``ft_frontend.h``)."""
    dtype = np.int16 if np.asarray(x).dtype == np.int16 else np.int8
    x = np.asarray(x, dtype=dtype).reshape(len(x), -1) if len(x) else np.zeros((0, window_values), dtype)
    n = int(x.shape[0])
    labels = [int(v) for v in y]
    if any(v < 0 or v > 255 for v in labels):
        raise ValueError("labels must fit uint8")
    what = ("as int16 samples (the front end computes the model input)" if dtype == np.int16
            else "quantized to the model's int8 input")
    ctx = dict(device=device, n_test=n, window_values=window_values,
               window_bytes=window_values * np.dtype(dtype).itemsize, filename=Path(source).name,
               ctype="int16_t" if dtype == np.int16 else "int8_t", what=what,
               x_len=max(1, n * window_values), y_len=max(1, n),
               x_rows=rows(x.reshape(-1).tolist(), str), y_rows=rows(labels, str))
    return {"include/test_data.h": render("test_data.h.j2", **ctx),
            source: render("test_data.cpp.j2", **ctx)}


def config_header(**values) -> str:
    """``fedtiny_config.h``; ``values`` are already C literals/ints (see build.config_values)."""
    return render("fedtiny_config.h.j2", **values)


def sketch_context(board: Board, ops: list[tuple[str, str]], live: bool = False) -> dict:
    """Everything main.cpp depends on: the board's TFLM headers and reset call, the
    ``(op, resolver method)`` list and whether it reads a sensor (``live``: ft_live.c's live and
    capture commands). Model numbers live in the config header, not here."""
    return dict(board=board.name, headers=board.headers, ops=list(ops),
                reset_statement=str(board.data["reset_statement"]), live=bool(live))


def render_sketch(context: dict) -> str:
    return render("main.cpp.j2", **context)
