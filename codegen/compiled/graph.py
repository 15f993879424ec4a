"""The model as a fixed list of integer layers: parse the .tflite flatbuffer, fold every constant.

``lower(model_bytes) -> Program``: subgraph 0 of the flatbuffer (read with TFLite's own schema
module, ``tflite_model._schema``), each operator turned into one layer whose shapes, weights and
requantization constants are all known at build time (``qmath``). Supported, exactly as the TFLM
reference kernels compute them for int8:

    EXPAND_DIMS, RESHAPE, SQUEEZE  views: the output aliases the input bytes (row-major)
    CONV_2D          int8 input/output, int8 weights (per-channel or per-tensor scales, zero
                     point 0), int32 bias, VALID padding, dilation 1, fused NONE/RELU/RELU6/
                     RELU_N1_TO_1
    FULLY_CONNECTED  int8, per-tensor or per-channel int8 weights, int32 bias, fused as above
    AVERAGE_POOL_2D  int8, VALID padding, input and output quantization equal, fused activation as
                     above: sum of the window / count rounded half away from zero (TFLM's kernel)
    MEAN             int8, reducing every axis but the last (global average pooling), batch 1
                     (models of earlier fedtiny versions; today's models pool with AVERAGE_POOL_2D)
    SOFTMAX          int8 in, int8 out with scale 1/256 and zero point -128

Anything else is refused by name with ``CodegenError`` (op, operator index, and why), at build
time: the compiled runtime has no interpreter to fall back on.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..errors import CodegenError
from . import qmath

SUPPORTED_OPS = ("AVERAGE_POOL_2D", "CONV_2D", "EXPAND_DIMS", "FULLY_CONNECTED", "MEAN", "RESHAPE", "SOFTMAX", "SQUEEZE")
VIEW_OPS = ("EXPAND_DIMS", "RESHAPE", "SQUEEZE")


@dataclass
class Tensor:
    index: int
    name: str
    shape: tuple[int, ...]
    dtype: str
    scales: tuple[float, ...]
    zero_points: tuple[int, ...]
    data: np.ndarray | None          # constant data (typed), None for activations

    @property
    def size(self) -> int:
        return int(np.prod(self.shape)) if self.shape else 1

    @property
    def scale(self) -> float:
        return self.scales[0] if self.scales else 0.0

    @property
    def zero_point(self) -> int:
        return self.zero_points[0] if self.zero_points else 0


@dataclass
class Layer:
    """One computing layer. ``kind``: conv, fc, avgpool, mean, softmax. ``src``/``dst``: activation ids
    (after resolving views); ``p``: the folded constants of that kind (see ``lower``)."""

    kind: str
    op_index: int
    src: int
    dst: int
    in_size: int
    out_size: int
    p: dict = field(default_factory=dict)
    out_scale: float = 0.0           # the output tensor's quantization (the head's split reads it)
    out_zero_point: int = 0


@dataclass
class Program:
    layers: list[Layer]
    input_id: int
    output_id: int
    input_size: int
    output_size: int
    input_scale: float
    input_zero_point: int
    output_scale: float
    output_zero_point: int
    op_sequence: tuple[str, ...]


def _names(enum_cls) -> dict[int, str]:
    return {v: k for k, v in vars(enum_cls).items() if not k.startswith("_") and isinstance(v, int)}


_DTYPES = {"INT8": np.int8, "INT32": np.int32, "UINT8": np.uint8, "INT16": np.int16,
           "FLOAT32": np.float32, "INT64": np.int64}


def _tensors(schema, model, sg) -> list[Tensor]:
    types = _names(schema.TensorType)
    out = []
    for i, t in enumerate(sg.tensors or []):
        dtype = types.get(t.type, str(t.type))
        q = t.quantization
        scales = tuple(float(s) for s in (q.scale if q is not None and q.scale is not None else []))
        zps = tuple(int(z) for z in (q.zeroPoint if q is not None and q.zeroPoint is not None else []))
        data = None
        buf = model.buffers[t.buffer] if t.buffer < len(model.buffers or []) else None
        if buf is not None and buf.data is not None and len(buf.data) > 0:
            raw = np.asarray(buf.data, dtype=np.uint8).tobytes()
            np_type = _DTYPES.get(dtype)
            if np_type is not None:
                data = np.frombuffer(raw, dtype=np.dtype(np_type).newbyteorder("<")).astype(np_type)
                shape = tuple(int(d) for d in (t.shape if t.shape is not None else []))
                if shape and data.size == int(np.prod(shape)):
                    data = data.reshape(shape)
        name = t.name.decode("utf-8", "replace") if isinstance(t.name, bytes) else str(t.name or "")
        shape = tuple(int(d) for d in (t.shape if t.shape is not None else []))
        out.append(Tensor(i, name, shape, dtype.lower(), scales, zps, data))
    return out


def _refuse(op_index: int, op: str, why: str) -> CodegenError:
    return CodegenError(f"the compiled runtime cannot generate operator {op_index} ({op}): {why}")


def _activation(schema, code: int, op_index: int, op: str) -> str:
    name = _names(schema.ActivationFunctionType).get(code, str(code))
    if name not in qmath.ACTIVATIONS:
        raise _refuse(op_index, op, f"fused activation {name} is not supported "
                                    f"(supported: {', '.join(qmath.ACTIVATIONS)})")
    return name


def _int8(t: Tensor, what: str, op_index: int, op: str) -> None:
    if t.dtype != "int8":
        raise _refuse(op_index, op, f"{what} tensor {t.name!r} is {t.dtype}, not int8")
    if len(t.scales) != 1:
        raise _refuse(op_index, op, f"{what} tensor {t.name!r} has {len(t.scales)} scales, not one")


def lower(model_bytes: bytes) -> Program:
    """Parse ``model_bytes`` and fold it into a ``Program``. Raises CodegenError for a file that is
    not a TFLite model and for every op or op variant outside the list in the module docstring."""
    from ..tflite_model import _schema, flatbuffer

    schema = _schema()
    buf = flatbuffer(model_bytes)
    try:
        model = schema.ModelT.InitFromPackedBuf(buf, 0)
    except Exception as e:  # noqa: BLE001 - a corrupt flatbuffer raises deep in the reader
        raise CodegenError(f"cannot parse the TFLite model: {type(e).__name__}: {e}") from None
    if not model.subgraphs:
        raise CodegenError("model has no subgraph")
    if len(model.subgraphs) > 1:
        raise CodegenError(f"the compiled runtime supports one subgraph; the model has {len(model.subgraphs)}")
    sg = model.subgraphs[0]
    tensors = _tensors(schema, model, sg)
    op_names = _names(schema.BuiltinOperator)
    seq = []
    for op in sg.operators or []:
        code = model.operatorCodes[op.opcodeIndex]
        builtin = max(int(code.builtinCode), int(code.deprecatedBuiltinCode))
        if builtin == schema.BuiltinOperator.CUSTOM:
            custom = code.customCode.decode("utf-8", "replace") if code.customCode else "?"
            seq.append("CUSTOM:" + custom)
        else:
            seq.append(op_names.get(builtin, f"BUILTIN_{builtin}"))
    unsupported = sorted(set(s for s in seq if s not in SUPPORTED_OPS))
    if unsupported:
        raise CodegenError(f"the model uses op(s) {', '.join(unsupported)} that the compiled runtime "
                           f"cannot generate (supported: {', '.join(SUPPORTED_OPS)}); "
                           f"build it with --runtime tflm for a board with a TFLM library")
    if len(sg.inputs) != 1 or len(sg.outputs) != 1:
        raise CodegenError(f"the compiled runtime needs one input and one output tensor "
                           f"(the model has {len(sg.inputs)} and {len(sg.outputs)})")
    alias: dict[int, int] = {}

    def act(i: int) -> int:
        while i in alias:
            i = alias[i]
        return i

    layers: list[Layer] = []
    for k, (op, name) in enumerate(zip(sg.operators, seq)):
        ins = [int(i) for i in op.inputs]
        outs = [int(i) for i in op.outputs]
        x, y = tensors[ins[0]], tensors[outs[0]]
        if name in VIEW_OPS:
            if x.size != y.size or x.dtype != y.dtype:
                raise _refuse(k, name, f"{x.shape} -> {y.shape} is not a view")
            if x.dtype == "int8" and (x.scale != y.scale or x.zero_point != y.zero_point):
                raise _refuse(k, name, "input and output quantization differ")
            alias[outs[0]] = ins[0]
            continue
        _int8(x, "input", k, name)
        _int8(y, "output", k, name)
        opts = op.builtinOptions
        if name == "CONV_2D":
            layers.append(_conv(schema, k, name, x, tensors[ins[1]],
                                tensors[ins[2]] if len(ins) > 2 and ins[2] >= 0 else None, y, opts,
                                act(ins[0]), outs[0]))
        elif name == "FULLY_CONNECTED":
            layers.append(_fc(schema, k, name, x, tensors[ins[1]],
                              tensors[ins[2]] if len(ins) > 2 and ins[2] >= 0 else None, y, opts,
                              act(ins[0]), outs[0]))
        elif name == "AVERAGE_POOL_2D":
            layers.append(_avgpool(schema, k, name, x, y, opts, act(ins[0]), outs[0]))
        elif name == "MEAN":
            layers.append(_mean(k, name, x, tensors[ins[1]], y, act(ins[0]), outs[0]))
        elif name == "SOFTMAX":
            layers.append(_softmax(k, name, x, y, opts, act(ins[0]), outs[0]))
        layers[-1].out_scale, layers[-1].out_zero_point = float(y.scale), int(y.zero_point)
    inp, out = tensors[int(sg.inputs[0])], tensors[int(sg.outputs[0])]
    _int8(inp, "model input", -1, "MODEL")
    _int8(out, "model output", -1, "MODEL")
    if not layers:
        raise CodegenError("the model has no computing layer")
    if act(int(sg.outputs[0])) != layers[-1].dst:
        raise CodegenError("the model's output is not produced by its last layer")
    for a, b in zip(layers, layers[1:]):
        if b.src != a.dst:
            raise CodegenError(f"operator {b.op_index} does not consume the previous layer's output: "
                               f"the compiled runtime supports a chain of layers only")
    if layers[0].src != int(sg.inputs[0]):
        raise CodegenError("the first layer does not read the model input")
    return Program(layers, int(sg.inputs[0]), layers[-1].dst, inp.size, out.size,
                   inp.scale, inp.zero_point, out.scale, out.zero_point, tuple(seq))


def _bias(b: Tensor | None, n: int, k: int, op: str) -> np.ndarray:
    if b is None:
        return np.zeros(n, np.int64)
    if b.dtype != "int32" or b.data is None or b.data.size != n:
        raise _refuse(k, op, f"bias must be a constant int32 tensor of {n} values")
    return b.data.reshape(-1).astype(np.int64)


def _weights(w: Tensor, k: int, op: str, n_out: int) -> None:
    if w.dtype != "int8" or w.data is None:
        raise _refuse(k, op, f"weights {w.name!r} must be a constant int8 tensor ({w.dtype})")
    if any(z != 0 for z in w.zero_points):
        raise _refuse(k, op, f"weights {w.name!r} have a nonzero zero point")
    if len(w.scales) not in (1, n_out):
        raise _refuse(k, op, f"weights {w.name!r} have {len(w.scales)} scales for {n_out} channels")


def _requant(x: Tensor, w: Tensor, y: Tensor, n_out: int, per_tensor_fc: bool) -> tuple[list[int], list[int]]:
    mults, shifts = [], []
    for c in range(n_out):
        s = w.scales[c] if len(w.scales) > 1 else w.scales[0]
        if per_tensor_fc:
            m, sh = qmath.fc_multiplier(x.scale, s, y.scale)
        else:
            m, sh = qmath.conv_multiplier(x.scale, s, y.scale)
        mults.append(m)
        shifts.append(sh)
    return mults, shifts


def _conv(schema, k, op, x, w, b, y, opts, src, dst) -> Layer:
    if len(x.shape) != 4 or len(w.shape) != 4 or len(y.shape) != 4 or x.shape[0] != 1:
        raise _refuse(k, op, f"expects 4-D NHWC tensors with batch 1 (input {x.shape})")
    _, ih, iw, ic = x.shape
    oc, kh, kw, wic = w.shape
    _weights(w, k, op, oc)
    if wic != ic:
        raise _refuse(k, op, f"grouped convolution ({ic} input channels, filter depth {wic})")
    if opts.dilationHFactor != 1 or opts.dilationWFactor != 1:
        raise _refuse(k, op, "dilation other than 1")
    if opts.padding != schema.Padding.VALID:
        raise _refuse(k, op, "padding SAME (only VALID is generated)")
    sh, sw = int(opts.strideH), int(opts.strideW)
    oh, ow = (ih - kh) // sh + 1, (iw - kw) // sw + 1
    if y.shape != (1, oh, ow, oc):
        raise _refuse(k, op, f"output shape {y.shape} is not the VALID result {(1, oh, ow, oc)}")
    activation = _activation(schema, opts.fusedActivationFunction, k, op)
    lo, hi = qmath.activation_range(activation, y.scale, y.zero_point)
    mults, shifts = _requant(x, w, y, oc, per_tensor_fc=False)
    wdata = w.data.reshape(oc, kh, kw * ic).astype(np.int64)
    # acc = bias + sum w * (x - zp_in) = (bias - zp_in * sum w) + sum w * x: fold the offset
    folded = _bias(b, oc, k, op) - int(x.zero_point) * wdata.sum(axis=(1, 2))
    return Layer("conv", k, src, dst, x.size, y.size, dict(
        ih=ih, iw=iw, ic=ic, oh=oh, ow=ow, oc=oc, kh=kh, kw=kw, sh=sh, sw=sw,
        weights=w.data.reshape(oc, kh, kw * ic).astype(np.int8), bias=folded.astype(np.int64),
        mult=mults, shift=shifts, out_zp=int(y.zero_point), lo=lo, hi=hi, activation=activation))


def _fc(schema, k, op, x, w, b, y, opts, src, dst) -> Layer:
    if len(w.shape) != 2:
        raise _refuse(k, op, f"weights of shape {w.shape}")
    n_out, n_in = w.shape
    _weights(w, k, op, n_out)
    if x.size != n_in or y.size != n_out:
        raise _refuse(k, op, f"batch other than 1 (input {x.shape}, weights {w.shape})")
    fmt = getattr(opts, "weightsFormat", 0)
    if fmt not in (0, None):
        raise _refuse(k, op, "shuffled weights format")
    activation = _activation(schema, opts.fusedActivationFunction, k, op)
    lo, hi = qmath.activation_range(activation, y.scale, y.zero_point)
    mults, shifts = _requant(x, w, y, n_out, per_tensor_fc=len(w.scales) == 1)
    wdata = w.data.astype(np.int64)
    folded = _bias(b, n_out, k, op) - int(x.zero_point) * wdata.sum(axis=1)
    return Layer("fc", k, src, dst, x.size, y.size, dict(
        n_in=n_in, n_out=n_out, weights=w.data.astype(np.int8).reshape(n_out, 1, n_in),
        bias=folded.astype(np.int64), mult=mults, shift=shifts, out_zp=int(y.zero_point),
        lo=lo, hi=hi, activation=activation, per_channel=len(w.scales) > 1))


def _avgpool(schema, k, op, x, y, opts, src, dst) -> Layer:
    if len(x.shape) != 4 or len(y.shape) != 4 or x.shape[0] != 1:
        raise _refuse(k, op, f"expects 4-D NHWC tensors with batch 1 (input {x.shape})")
    if x.scale != y.scale or x.zero_point != y.zero_point:
        raise _refuse(k, op, "input and output quantization differ")
    if opts.padding != schema.Padding.VALID:
        raise _refuse(k, op, "padding SAME (only VALID is generated)")
    _, ih, iw, c = x.shape
    fh, fw, sh, sw = int(opts.filterHeight), int(opts.filterWidth), int(opts.strideH), int(opts.strideW)
    if not (1 <= fh <= ih and 1 <= fw <= iw and sh >= 1 and sw >= 1):
        raise _refuse(k, op, f"filter {fh}x{fw} / stride {sh}x{sw} on a {ih}x{iw} input")
    oh, ow = (ih - fh) // sh + 1, (iw - fw) // sw + 1
    if y.shape != (1, oh, ow, c):
        raise _refuse(k, op, f"output shape {y.shape} is not the VALID result {(1, oh, ow, c)}")
    activation = _activation(schema, opts.fusedActivationFunction, k, op)
    lo, hi = qmath.activation_range(activation, y.scale, y.zero_point)
    return Layer("avgpool", k, src, dst, x.size, y.size, dict(
        ih=ih, iw=iw, c=c, oh=oh, ow=ow, fh=fh, fw=fw, sh=sh, sw=sw, lo=lo, hi=hi, activation=activation))


def _mean(k, op, x, axes_t, y, src, dst) -> Layer:
    if axes_t.data is None:
        raise _refuse(k, op, "axes must be constant")
    nd = len(x.shape)
    axes = sorted(set(int(a) % nd for a in np.asarray(axes_t.data).reshape(-1)))
    if nd < 2 or x.shape[0] != 1 or axes != list(range(1, nd - 1)):
        raise _refuse(k, op, f"reduces axes {axes} of {x.shape}: only every axis between batch 1 and "
                             f"the channels (global average pooling) is generated")
    c = x.shape[-1]
    n = x.size // c
    if y.size != c:
        raise _refuse(k, op, f"output {y.shape} has not {c} values")
    m, s = qmath.mean_multiplier(x.scale, y.scale, n)
    return Layer("mean", k, src, dst, x.size, y.size, dict(
        n=n, c=c, in_zp=int(x.zero_point), out_zp=int(y.zero_point), mult=m, shift=s,
        offset=-int(x.zero_point) * n))


def _softmax(k, op, x, y, opts, src, dst) -> Layer:
    if y.zero_point != -128 or np.float32(y.scale) != np.float32(1.0 / 256):
        raise _refuse(k, op, f"int8 output must have scale 1/256 and zero point -128 "
                             f"(has {y.scale}, {y.zero_point})")
    depth = x.shape[-1] if x.shape else 1
    if x.size != depth:
        raise _refuse(k, op, f"more than one row ({x.shape})")
    beta = float(opts.beta)
    return Layer("softmax", k, src, dst, x.size, y.size, dict(
        depth=depth, table=qmath.softmax_exp_table(beta, x.scale), beta=beta))
