"""Which TFLite builtin ops the generated sketch can register, and how.

``OP_TABLE`` maps a builtin op name (as ``fedtiny.codegen.tflite_model`` reports it) to the
``tflite::MicroMutableOpResolver`` method that registers its TFLM kernel. ``resolver_calls`` turns
a model's op list into those calls and refuses any op outside the table, naming it: a resolver that
lacks an op fails only at ``AllocateTensors()`` on the board, which is far harder to diagnose.
"""
from __future__ import annotations

from typing import Mapping

from .errors import CodegenError

OP_TABLE: dict[str, str] = {
    "ABS": "AddAbs",
    "ADD": "AddAdd",
    "AVERAGE_POOL_2D": "AddAveragePool2D",
    "BATCH_TO_SPACE_ND": "AddBatchToSpaceNd",
    "CONCATENATION": "AddConcatenation",
    "CONV_2D": "AddConv2D",
    "DEPTHWISE_CONV_2D": "AddDepthwiseConv2D",
    "DEQUANTIZE": "AddDequantize",
    "DIV": "AddDiv",
    "EXPAND_DIMS": "AddExpandDims",
    "FULLY_CONNECTED": "AddFullyConnected",
    "HARD_SWISH": "AddHardSwish",
    "LEAKY_RELU": "AddLeakyRelu",
    "LOGISTIC": "AddLogistic",
    "MAX_POOL_2D": "AddMaxPool2D",
    "MAXIMUM": "AddMaximum",
    "MEAN": "AddMean",
    "MINIMUM": "AddMinimum",
    "MUL": "AddMul",
    "PACK": "AddPack",
    "PAD": "AddPad",
    "PADV2": "AddPadV2",
    "QUANTIZE": "AddQuantize",
    "REDUCE_MAX": "AddReduceMax",
    "RELU": "AddRelu",
    "RELU6": "AddRelu6",
    "RESHAPE": "AddReshape",
    "SHAPE": "AddShape",
    "SOFTMAX": "AddSoftmax",
    "SPACE_TO_BATCH_ND": "AddSpaceToBatchNd",
    "SQUEEZE": "AddSqueeze",
    "STRIDED_SLICE": "AddStridedSlice",
    "SUB": "AddSub",
    "SUM": "AddSum",
    "TANH": "AddTanh",
    "TRANSPOSE": "AddTranspose",
    "UNPACK": "AddUnpack",
}


def resolver_calls(ops: tuple[str, ...] | list[str],
                   table: Mapping[str, str] | None = None) -> list[tuple[str, str]]:
    """``[(op, method), ...]`` in the order of ``ops`` (one per unique op, so the resolver's
    template argument N = len(result)). Raises CodegenError naming every op not in ``table``."""
    table = OP_TABLE if table is None else table
    unique = list(dict.fromkeys(ops))
    missing = [op for op in unique if op not in table]
    if missing:
        raise CodegenError(
            f"the model uses op(s) {', '.join(missing)} that the TFLM resolver table of fedtiny "
            f"cannot provide (supported: {', '.join(sorted(table))})")
    return [(op, table[op]) for op in unique]
