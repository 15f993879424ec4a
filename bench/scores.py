"""Tell a borderline disagreement from a real one by the raw int8 scores.

A board whose kernels round a little differently from the host's (CMSIS-NN or an older TFLM on
the Nano 33 BLE: up to about 7 LSB measured on QEMU against the host wheel) can decide a
window differently when that window sits at the decision threshold. For every decision that
differs, the bench asks the board for its raw scores (``infer``) and compares them with the host's:

    borderline   every score within ``tolerance_lsb`` of the host's: the models agree, the window
                 is at the threshold (counted and listed; the bench still passes)
    mismatch     a score further away, or no scores to compare: the board computes something else

The host's scores are the run's own (``test_split.npz`` ``out_int8``, written by the trainer from
tflite-micro); a run from before that field existed gets them from tflite-micro here, on the same
model bytes and windows.
"""
from __future__ import annotations

import numpy as np

from .rundata import RunDevice

# Measured gap between a board's kernels and the host's for the ops today's models use (CONV_2D,
# AVERAGE_POOL_2D, per-tensor FULLY_CONNECTED, SOFTMAX): 0 LSB (the compiled runtime on QEMU and the
# host-built sketch on every test window; the Nano's CMSIS-NN and esp-tflite-micro's reference
# kernels on QEMU, docs/explanation/firmware.md). The earlier 7-21 LSB came from MEAN, which no
# model contains any more. 1 LSB allows one rounding step of a kernel library not checked (ESP-NN).
DEFAULT_TOLERANCE_LSB = 1


def host_scores(rd: RunDevice, idx) -> np.ndarray:
    """The host's raw int8 outputs for test windows ``idx``, shape (len(idx), K)."""
    idx = [int(i) for i in idx]
    if rd.out_int8 is not None:
        return np.asarray(rd.out_int8[idx], dtype=np.int8)
    if not idx:
        return np.zeros((0, rd.n_classes), np.int8)
    from tflite_micro.python.tflite_micro import runtime

    interp = runtime.Interpreter.from_bytes(bytes(rd.model_bytes))
    shape = tuple(int(s) for s in interp.get_input_details(0)["shape"])
    out = []
    for i in idx:
        interp.set_input(np.asarray(rd.x_int8[i], np.int8).reshape(shape), 0)
        interp.invoke()
        out.append(np.array(interp.get_output(0)).reshape(-1))
    return np.stack(out).astype(np.int8)


def lsb_gap(device_scores, host: np.ndarray) -> int | None:
    """Largest absolute difference in LSB, or None when the score vectors differ in length."""
    got = np.asarray(device_scores, dtype=int).reshape(-1)
    exp = np.asarray(host, dtype=int).reshape(-1)
    if got.shape != exp.shape:
        return None
    return int(np.max(np.abs(got - exp))) if got.size else 0


def classify(gap: int | None, tolerance_lsb: int) -> str:
    """'borderline' when the gap is known and within the tolerance, else 'mismatch'."""
    return "borderline" if gap is not None and gap <= tolerance_lsb else "mismatch"
