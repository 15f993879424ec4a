"""Refuse a model that uses a feature its board's TFLM library lacks (beside the op check).

Board files state, under ``tflm``, what their pinned TFLM library computes correctly:

    "fc_per_channel": false   FULLY_CONNECTED with per-channel weight scales. The Nano 33 BLE's
                              Arduino_TensorFlowLite (pinned commit, CMSIS-NN) supports only
                              per-tensor FC weights and silently applies channel 0's scale to
                              every channel, so such a model computes other scores on the board
                              than on the host (verified on QEMU mps2-an386).
                              esp-tflite-micro (ESP32) supports per-channel FC: true.

A board file without the key is treated as not supporting the feature (the safe reading: fedtiny's
models are per-tensor anyway). ``check_library(facts, board)`` raises CodegenError naming the
feature, the tensors that use it, the board and its library, and how to get a model it runs.
"""
from __future__ import annotations

from .boards import Board
from .errors import CodegenError
from .tflite_model import ModelFacts


def fc_per_channel_supported(board: Board) -> bool:
    return bool(board.data.get("tflm", {}).get("fc_per_channel", False))


def check_library(facts: ModelFacts, board: Board) -> None:
    """Raise CodegenError if the model needs a library feature ``board`` does not have."""
    if not fc_per_channel_supported(board):
        bad = [w for w in facts.fc_weights if w.per_channel]
        if bad:
            names = ", ".join(f"{w.tensor} ({w.n_scales} scales)" for w in bad)
            raise CodegenError(
                f"the model has per-channel FULLY_CONNECTED weights ({names}), which the TFLM "
                f"library of board {board.name} ({board.data['tflm'].get('library', '?')}) does "
                f"not support: it would use the first channel's scale for every channel and "
                f"decide differently from the host. Convert with per-tensor dense layers (fedtiny "
                f"train does; the TF converter attribute "
                f"_experimental_disable_per_channel_quantization_for_dense_layers = True)")
