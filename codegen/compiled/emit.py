"""Render a lowered ``Program`` as C: ``ft_model.h``, ``ft_model.c`` and the kernel header.

Weights: int16, zero padded to whole groups of four and reordered within each group for the DSP
dot product (``_padded_rows``). Buffer plan (one static buffer, ``FT_MODEL_ARENA_BYTES``): the layers form a chain, so two
regions suffice: the input is copied into region A, layer 0 writes region B, layer 1 region A,
and so on (ping-pong). Each region is as large as the largest tensor placed in it plus 4 bytes
(the dot product reads whole 32-bit words past a receptive field's last byte; those bytes meet
zero weights), rounded up to 4. ``plan(program)`` returns the offsets; ``model_files`` the text.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..render import rows
from .graph import Layer, Program

TEMPLATES = Path(__file__).resolve().parent / "templates"
KERNELS_H = "ft_kernels.h"
SLACK = 4


def _up4(n: int) -> int:
    return (n + 3) // 4 * 4


@dataclass(frozen=True)
class BufferPlan:
    input_offset: int
    offsets: tuple[int, ...]     # output offset of each layer
    arena_bytes: int

    @property
    def output_offset(self) -> int:
        return self.offsets[-1]


def plan(program: Program) -> BufferPlan:
    """Ping-pong placement of the input and every layer's output (module docstring)."""
    sizes = [program.input_size] + [layer.out_size for layer in program.layers]
    region_a = max(_up4(s + SLACK) for s in sizes[0::2])
    region_b = max([_up4(s + SLACK) for s in sizes[1::2]] or [0])
    offsets = tuple(region_a if i % 2 == 0 else 0 for i in range(len(program.layers)))
    return BufferPlan(0, offsets, region_a + region_b)


def _array(name: str, ctype: str, values, aligned: bool = False) -> dict:
    vals = [int(v) for v in np.asarray(values).reshape(-1)]
    return dict(name=name, ctype=ctype, length=max(1, len(vals)), aligned=aligned,
                rows=rows(vals, str))


def _padded_rows(w: np.ndarray) -> tuple[np.ndarray, int]:
    """w: [oc][kh][L] int8 -> [oc][kh][L4] int16, zero padded (L4 = L rounded up to 4), each
    group of four (w0 w1 w2 w3) reordered to (w0 w2 w1 w3): the order in which SXTB16 and
    SXTB16-ROR-8 unpack four input bytes (ft_kernels.h), so SMLAD pairs them directly."""
    oc, kh, n = w.shape
    n4 = _up4(n)
    out = np.zeros((oc, kh, n4), np.int16)
    out[:, :, :n] = w
    groups = out.reshape(oc, kh, n4 // 4, 4)
    return groups[..., [0, 2, 1, 3]].reshape(oc, kh, n4), n4


def _layer_context(i: int, layer: Layer, src: int, dst: int) -> dict:
    p = layer.p
    tag = f"g_ft_l{i}"
    if layer.kind in ("conv", "fc"):
        w, n4 = _padded_rows(p["weights"])
        if layer.kind == "conv":
            geo = dict(iw=p["iw"], ic=p["ic"], oh=p["oh"], ow=p["ow"], oc=p["oc"], kh=p["kh"],
                       sh=p["sh"], sw=p["sw"])
            title = (f"layer {i}: CONV_2D (operator {layer.op_index}) {p['ih']}x{p['iw']}x{p['ic']} -> "
                     f"{p['oh']}x{p['ow']}x{p['oc']}, kernel {p['kh']}x{p['kw']}, stride "
                     f"{p['sh']}x{p['sw']}, {p['activation']} clamp [{p['lo']}, {p['hi']}]")
        else:
            geo = dict(iw=1, ic=p["n_in"], oh=1, ow=1, oc=p["n_out"], kh=1, sh=1, sw=1)
            title = (f"layer {i}: FULLY_CONNECTED (operator {layer.op_index}) {p['n_in']} -> "
                     f"{p['n_out']}, {'per-channel' if p['per_channel'] else 'per-tensor'} weights, "
                     f"{p['activation']} clamp [{p['lo']}, {p['hi']}]")
        bias = np.asarray(p["bias"], np.int64)
        if bias.min(initial=0) < -(1 << 31) or bias.max(initial=0) >= (1 << 31):
            raise ValueError("folded bias does not fit int32")
        arrays = [_array(f"{tag}_w", "int16_t", w, aligned=True),
                  _array(f"{tag}_bias", "int32_t", bias),
                  _array(f"{tag}_mult", "int32_t", p["mult"]),
                  _array(f"{tag}_shift", "int8_t", p["shift"])]
        call = (f"ft_conv_s8(a + {src}, a + {dst}, {geo['iw']}, {geo['ic']}, {geo['oh']}, {geo['ow']}, "
                f"{geo['oc']}, {geo['kh']}, {n4}, {geo['sh']}, {geo['sw']}, {tag}_w, {tag}_bias, "
                f"{tag}_mult, {tag}_shift, {p['out_zp']}, {p['lo']}, {p['hi']});")
        return dict(title=title, arrays=arrays, call=call)
    if layer.kind == "avgpool":
        title = (f"layer {i}: AVERAGE_POOL_2D (operator {layer.op_index}) {p['ih']}x{p['iw']}x{p['c']} -> "
                 f"{p['oh']}x{p['ow']}x{p['c']}, filter {p['fh']}x{p['fw']}, stride {p['sh']}x{p['sw']}, "
                 f"{p['activation']} clamp [{p['lo']}, {p['hi']}]")
        call = (f"ft_avgpool_s8(a + {src}, a + {dst}, {p['iw']}, {p['c']}, {p['oh']}, {p['ow']}, {p['fh']}, "
                f"{p['fw']}, {p['sh']}, {p['sw']}, {p['lo']}, {p['hi']});")
        return dict(title=title, arrays=[], call=call)
    if layer.kind == "mean":
        title = (f"layer {i}: MEAN (operator {layer.op_index}) over {p['n']} positions of {p['c']} "
                 f"channels, multiplier {p['mult']} shift {p['shift']}")
        call = (f"ft_mean_s8(a + {src}, a + {dst}, {p['n']}, {p['c']}, {p['offset']}, {p['mult']}, "
                f"{p['shift']}, {p['out_zp']});")
        return dict(title=title, arrays=[], call=call)
    if layer.kind == "softmax":
        title = (f"layer {i}: SOFTMAX (operator {layer.op_index}) of {p['depth']} values, beta "
                 f"{p['beta']:g}: table[d] = exp(-d * beta * input_scale) in Q0.31")
        arrays = [_array(f"{tag}_exp", "int32_t", p["table"])]
        call = f"ft_softmax_s8(a + {src}, a + {dst}, {p['depth']}, {tag}_exp);"
        return dict(title=title, arrays=arrays, call=call)
    raise ValueError(layer.kind)


def model_files(program: Program, device: int, sha256: str, include_dir: str = "include",
                src_dir: str = "src", feature_layers: int = 0) -> dict[str, str]:
    """The compiled model's files, keyed by project-relative path. ``feature_layers`` > 0 adds
    ``ft_model_features``: the first ``feature_layers`` layers only, copying out the last one's
    output (the trainable head's input, ``compiled.head``)."""
    from ..render import _env

    bp = plan(program)
    src = bp.input_offset
    layers, lines = [], []
    for i, layer in enumerate(program.layers):
        dst = bp.offsets[i]
        layers.append(_layer_context(i, layer, src, dst))
        lines.append(f"{layer.kind:8s} bytes [{src}, {src + layer.in_size}) -> [{dst}, {dst + layer.out_size})")
        src = dst
    env = _env()
    env.loader.searchpath = [str(TEMPLATES)]
    ops = ", ".join(dict.fromkeys(program.op_sequence))
    ctx = dict(device=int(device), model_sha256=sha256, ops=ops, input_bytes=program.input_size,
               output_bytes=program.output_size, arena_bytes=bp.arena_bytes, plan=lines,
               layers=layers, input_offset=bp.input_offset, output_offset=bp.output_offset,
               feature_layers=int(feature_layers),
               feature_bytes=program.layers[feature_layers - 1].out_size if feature_layers else 0,
               feature_offset=bp.offsets[feature_layers - 1] if feature_layers else 0)
    return {f"{include_dir}/ft_model.h": env.get_template("ft_model.h.j2").render(**ctx),
            f"{include_dir}/{KERNELS_H}": (TEMPLATES / KERNELS_H).read_text(),
            f"{src_dir}/ft_model.c": env.get_template("ft_model.c.j2").render(**ctx)}
