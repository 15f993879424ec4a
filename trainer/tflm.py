"""Run INT8 models under the TensorFlow Lite Micro reference kernels (PyPI ``tflite-micro``).

The interpreter is the same TFLM code the boards run (reference kernels; boards may use CMSIS-NN /
ESP-NN, which can differ by 1 LSB). ``arena_bytes`` reads the recording allocator's total from the
C-level stderr (``print_allocations`` writes there and returns None), captured via fd 2.
"""
from __future__ import annotations

import os
import re
import sys
import tempfile

import numpy as np

_ARENA_RE = re.compile(r"Arena allocation total (\d+) bytes")


def _interpreter(model_bytes: bytes):
    from tflite_micro.python.tflite_micro import runtime

    return runtime.Interpreter.from_bytes(bytes(model_bytes))


def run_int8(model_bytes: bytes, x_int8: np.ndarray) -> np.ndarray:
    """Invoke the model once per window; ``x_int8`` is (n, T, C) int8; returns (n, K) int8 outputs."""
    interp = _interpreter(model_bytes)
    outs = []
    for xi in np.asarray(x_int8, dtype=np.int8):
        interp.set_input(xi[None, ...], 0)
        interp.invoke()
        outs.append(np.array(interp.get_output(0)).reshape(-1))
    return np.stack(outs).astype(np.int8) if outs else np.zeros((0, 0), np.int8)


def capture_fd2(fn) -> str:
    """Call ``fn()`` with the process-level stderr (fd 2) redirected to a temp file; return its text."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as tmp:
        os.dup2(tmp.fileno(), 2)
        try:
            fn()
        finally:
            os.dup2(saved, 2)
            os.close(saved)
        tmp.seek(0)
        return tmp.read().decode(errors="replace")


def arena_bytes(model_bytes: bytes) -> int:
    """Arena bytes the host (64-bit) TFLM allocator used after one invoke on a zero input of the
    model's own input type (int8 for the deployed models): an upper bound for a 32-bit board,
    whose pointers and structs are smaller."""
    interp = _interpreter(model_bytes)
    details = interp.get_input_details(0)
    interp.set_input(np.zeros(tuple(details["shape"]), details["dtype"]), 0)
    interp.invoke()
    text = capture_fd2(interp.print_allocations)
    m = _ARENA_RE.search(text)
    if not m:
        raise RuntimeError("tflite-micro did not report its arena allocation")
    return int(m.group(1))
