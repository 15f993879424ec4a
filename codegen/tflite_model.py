"""Read a .tflite flatbuffer with the schema module TFLite itself ships (no hand-rolled offsets).

``read_model(bytes) -> ModelFacts``: the builtin ops of the main subgraph in order of first use,
the schema version, the first input / output tensor's shape, type, scale and zero point, and the
quantization of every FULLY_CONNECTED weight tensor (how many scales it carries: 1 = per tensor,
one per output channel = per channel), which a board's TFLM library may not support.
The schema module is ``schema_py_generated`` from the ``tflite-micro`` package (fallback: the one
inside ``tensorflow``); both are generated from TFLite's schema.fbs by flatc.
"""
from __future__ import annotations

from dataclasses import dataclass

from .errors import CodegenError


def _schema():
    try:
        from tflite_micro.tensorflow.lite.micro.python import schema_py_generated as schema
    except ImportError:  # pragma: no cover - tflite-micro is a dependency; tensorflow ships one too
        from tensorflow.lite.python import schema_py_generated as schema
    return schema


@dataclass(frozen=True)
class TensorFacts:
    name: str
    shape: tuple[int, ...]
    dtype: str          # "int8", "float32", ...
    scale: float
    zero_point: int

    @property
    def size(self) -> int:
        n = 1
        for d in self.shape:
            n *= int(d)
        return n


@dataclass(frozen=True)
class WeightQuant:
    """Quantization of one operator's weight tensor (operator input 1)."""

    op_index: int       # position of the operator in subgraph 0
    op: str             # builtin op name, e.g. "FULLY_CONNECTED"
    tensor: str         # weight tensor name
    n_scales: int       # 1: per-tensor; > 1: per-channel (one scale per channel)
    quantized_dimension: int

    @property
    def per_channel(self) -> bool:
        return self.n_scales > 1


@dataclass(frozen=True)
class ModelFacts:
    schema_version: int
    ops: tuple[str, ...]          # unique builtin op names (e.g. "CONV_2D"), in order of first use
    op_sequence: tuple[str, ...]  # every operator of subgraph 0, in execution order
    input: TensorFacts
    output: TensorFacts
    n_inputs: int
    n_outputs: int
    fc_weights: tuple[WeightQuant, ...] = ()   # every FULLY_CONNECTED weight tensor, in op order


def _names(enum_cls) -> dict[int, str]:
    return {v: k for k, v in vars(enum_cls).items() if not k.startswith("_") and isinstance(v, int)}


def _tensor(schema, subgraph, index: int) -> TensorFacts:
    t = subgraph.Tensors(index)
    types = _names(schema.TensorType)
    q = t.Quantization()
    scale, zp = 0.0, 0
    if q is not None and q.ScaleLength() > 0:
        scale = float(q.Scale(0))
        zp = int(q.ZeroPoint(0)) if q.ZeroPointLength() > 0 else 0
    name = t.Name().decode("utf-8", "replace") if t.Name() else ""
    return TensorFacts(name, tuple(int(d) for d in t.ShapeAsNumpy()) if t.ShapeLength() else (),
                       types.get(t.Type(), str(t.Type())).lower(), scale, zp)


def flatbuffer(model_bytes: bytes) -> bytearray:
    """``model_bytes`` as a mutable buffer for the schema readers; CodegenError unless it carries
    the TFLite file identifier (``TFL3`` at offset 4)."""
    buf = bytearray(model_bytes)
    if len(buf) < 8 or bytes(buf[4:8]) != b"TFL3":
        raise CodegenError("model is not a TFLite flatbuffer (file identifier TFL3 missing)")
    return buf


def read_model(model_bytes: bytes) -> ModelFacts:
    """Parse ``model_bytes`` (a .tflite flatbuffer). Raises CodegenError if it is not one, or if
    it has no subgraph / input / output. A custom op is reported as ``CUSTOM:<code>``."""
    schema = _schema()
    buf = flatbuffer(model_bytes)
    try:
        model = schema.Model.GetRootAs(buf, 0)
        if model.SubgraphsLength() < 1:
            raise CodegenError("model has no subgraph")
        sg = model.Subgraphs(0)
        op_names = _names(schema.BuiltinOperator)
        seq = []
        fc_weights = []
        for i in range(sg.OperatorsLength()):
            operator = sg.Operators(i)
            code = model.OperatorCodes(operator.OpcodeIndex())
            # schema >= 2.4 keeps small codes in deprecated_builtin_code; the larger one wins
            builtin = max(int(code.BuiltinCode()), int(code.DeprecatedBuiltinCode()))
            if builtin == schema.BuiltinOperator.CUSTOM:
                custom = code.CustomCode()
                seq.append("CUSTOM:" + (custom.decode("utf-8", "replace") if custom else "?"))
            else:
                seq.append(op_names.get(builtin, f"BUILTIN_{builtin}"))
            if seq[-1] == "FULLY_CONNECTED" and operator.InputsLength() > 1:
                fc_weights.append(_weight_quant(sg, i, seq[-1], int(operator.Inputs(1))))
        if sg.InputsLength() < 1 or sg.OutputsLength() < 1:
            raise CodegenError("model has no input or no output tensor")
        inp = _tensor(schema, sg, int(sg.Inputs(0)))
        out = _tensor(schema, sg, int(sg.Outputs(0)))
        version = int(model.Version())
        n_in, n_out = int(sg.InputsLength()), int(sg.OutputsLength())
    except CodegenError:
        raise
    except Exception as e:  # a corrupt flatbuffer raises struct/index errors deep in the reader
        raise CodegenError(f"cannot parse the TFLite model: {type(e).__name__}: {e}") from None
    unique = tuple(dict.fromkeys(seq))
    return ModelFacts(version, unique, tuple(seq), inp, out, n_in, n_out, tuple(fc_weights))


def _weight_quant(subgraph, op_index: int, op: str, tensor_index: int) -> WeightQuant:
    """The quantization of an operator's weight tensor (index -1 means no tensor: 0 scales)."""
    if tensor_index < 0:
        return WeightQuant(op_index, op, "", 0, 0)
    t = subgraph.Tensors(tensor_index)
    q = t.Quantization()
    n = int(q.ScaleLength()) if q is not None else 0
    dim = int(q.QuantizedDimension()) if q is not None else 0
    name = t.Name().decode("utf-8", "replace") if t.Name() else f"tensor {tensor_index}"
    return WeightQuant(op_index, op, name, n, dim)
