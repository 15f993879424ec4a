"""``build_project``: one device of a run -> a self-contained PlatformIO firmware project.

Reads RUN/devices/devNN/ (model_int8.tflite, device.json, test_split.npz) through
``fedtiny.bench.rundata.load_run_device`` (which checks the model hash), parses the model with
TFLite's own flatbuffer schema, refuses ops and quantization features the board's TFLM library
lacks (``ops``, ``libcheck``), sizes the arena with tflite-micro on the host plus a margin, checks
the fit against the board budget, and renders into RUN/firmware/devNN-<board>/ (or ``out_dir``):

    platformio.ini                  the board's env (from boards/<board>.json)
    fedtiny_build.json              what was built and the fit numbers (no timestamps)
    include/fedtiny_protocol.h      fedtiny.firmware.protocol.render_c_header()
    include/fedtiny_config.h        device, board, threshold, q0_fault_max, scales, arena, hash
    include/model_data.h  src/model_data.cpp    the model as an aligned const byte array
    include/test_data.h   src/test_data.cpp     the first N test windows (int8 model inputs, or
                                                the int16 samples with a front end) and labels
    include/ft_frontend.h, ft_frontend_config.h the front end (codegen.frontend_c; raw: kind only)
    src/main.cpp                    the sketch

The folder is written atomically (rendered beside it, then swapped in). Compiling is attempted
only if PlatformIO and the board's platform are installed; otherwise ``compile_hint`` is the exact
command to run where they are.

``runtime="compiled"`` (``build_compiled``; the only runtime of qemu-m4) writes instead the model
as generated C, the protocol application in C and the board's glue (``compiled.project`` lists the
files): no TFLM, no model flatbuffer in the firmware. A qemu-m4 project is compiled with
arm-none-eabi-gcc (``armgcc``) in the temporary folder before the swap, so a compile error leaves
the previous project untouched.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

import numpy as np

from fedtiny.trainer.rundir import dumps_strict
from fedtiny.firmware import protocol as P

from . import fit as fitmod
from . import pio as piomod
from .boards import Board, load_board, platformio_ini
from .errors import CodegenError
from .libcheck import check_library
from .ops import resolver_calls
from .render import c_float, c_string, config_header, model_files, render_sketch, sketch_context, test_files
from .tflite_model import ModelFacts, read_model

BUILD_MANIFEST = "fedtiny_build.json"


@dataclass
class BuildResult:
    project_dir: Path
    board: str
    device: int
    model_bytes: int
    arena_bytes: int        # the arena the sketch allocates
    test_samples: int
    flash_used: int
    flash_budget: int
    ram_used: int
    ram_budget: int
    compiled: bool
    compile_hint: str       # the exact command to compile when not compiled here
    runtime: str = "tflm"
    sizes: dict | None = None   # text/data/bss/stack bytes of the ELF (qemu-m4, compiled)
    live: object | None = None  # codegen.live.LiveSpec of an --input sensor firmware
    head_plan: dict | None = None   # the trainable head's memory plan (HeadPlan.to_dict)
    time_estimate: str | None = None    # a live PlatformIO build: its estimated inference time, or why none


def _named(info: dict) -> str:
    """' (NAME)' for a device with a name in its device.json (a fleet folder's device)."""
    return f" ({info['name']})" if info.get("name") else ""


def default_out_dir(run_dir: Path, device: int, board: Board) -> Path:
    from fedtiny.trainer.rundir import device_label, run_device_names

    return Path(run_dir) / "firmware" / f"{device_label(run_device_names(run_dir), device)}-{board.name}"


def _load(run_dir: Path, device: int):
    from fedtiny.bench.rundata import BenchError, load_run_device

    try:
        return load_run_device(run_dir, device)
    except BenchError as e:
        raise CodegenError(str(e)) from None


def _check_model(facts: ModelFacts, info: dict, x_int8: np.ndarray) -> None:
    if facts.input.dtype != "int8" or facts.output.dtype != "int8":
        raise CodegenError(f"model input/output must be int8 (found {facts.input.dtype}/{facts.output.dtype}); "
                           f"the trainer converts with int8 input and output")
    window = int(np.prod(x_int8.shape[1:])) if x_int8.ndim > 1 else 0
    if facts.input.size != window:
        raise CodegenError(f"model input has {facts.input.size} values but test windows have {window}")
    k = len(info["class_names"])
    if facts.output.size != k:
        raise CodegenError(f"model output has {facts.output.size} values but device.json names {k} classes")
    for key, got in (("input_scale", facts.input.scale), ("output_scale", facts.output.scale)):
        if not np.isclose(float(info[key]), got, rtol=1e-6, atol=0):
            raise CodegenError(f"device.json {key}={info[key]} differs from the model's {got}")
    for key, got in (("input_zero_point", facts.input.zero_point), ("output_zero_point", facts.output.zero_point)):
        if int(info[key]) != got:
            raise CodegenError(f"device.json {key}={info[key]} differs from the model's {got}")


@dataclass(frozen=True)
class TestWindows:
    """What a firmware embeds of the test split: int8 model inputs (raw models) or the int16
    samples the front end runs on, with the bytes per window and the front end's extra RAM."""

    x: np.ndarray
    window_values: int
    window_bytes: int
    frontend_ram: int
    frontend_files: dict
    frontend: str = "raw"


def test_windows(rd, facts: ModelFacts, device: int) -> TestWindows:
    from .frontend_c import frontend_files, frontend_of, work_bytes

    d = frontend_of(rd.info)
    files = frontend_files(rd.info, facts.input.scale, facts.input.zero_point, device)
    if d["kind"] == "raw":
        return TestWindows(rd.x_int8, facts.input.size, facts.input.size, 0, files)
    if int(d["n_features"]) != facts.input.size:
        raise CodegenError(f"the {d['kind']} front end gives {d['n_features']} values but the model takes "
                           f"{facts.input.size}")
    raw = rd.raw_int16
    values = int(d["window"]) * int(d["channels"])
    if raw is None or int(np.prod(raw.shape[1:])) != values:
        raise CodegenError(f"the test split's raw_int16 samples do not match the {d['kind']} front end's "
                           f"{d['window']} x {d['channels']} window")
    return TestWindows(raw, values, 2 * values, work_bytes(d), files, d["kind"])


ORIGINS = P.THRESHOLD_ORIGINS   # the serial banner carries it too (thr_from)


def threshold_origin(info: dict) -> str:
    """device.json's ``threshold_origin`` (runs made before it existed: "default"); anything but
    local / fleet / default is refused, since it lands in a C string literal."""
    origin = info.get("threshold_origin") or "default"
    if origin not in ORIGINS:
        raise CodegenError(f"device.json threshold_origin {origin!r} is not one of {', '.join(ORIGINS)}")
    return origin


def config_values(board: Board, device: int, info: dict, facts: ModelFacts, sha256: str,
                  host_arena: int, arena: int, arena_comment: list[str] | None = None) -> dict:
    """The config header's values, already as C literals."""
    if arena_comment is None:
        arena_comment = [f"Tensor arena: host TFLM figure {host_arena} B (64-bit, an upper bound for 32-bit boards)",
                         f"plus the margin ({fitmod.ARENA_MARGIN_TEXT}), rounded up to 16."]
    shape = facts.input.shape[1:] if len(facts.input.shape) == 3 else facts.input.shape[-2:]
    t, c = (int(shape[0]), int(shape[1])) if len(shape) == 2 else (facts.input.size, 1)
    threshold = float(info["threshold"])
    return dict(
        protocol_version=P.PROTOCOL_VERSION, board=board.name, device=int(device), model_sha256=sha256,
        threshold=c_float(threshold), threshold_origin=threshold_origin(info),
        q0_fault_max=P.fault_q0_max(threshold, facts.output.scale, facts.output.zero_point),
        input_t=t, input_c=c, input_bytes=facts.input.size,
        input_scale=c_float(facts.input.scale), input_zero_point=facts.input.zero_point,
        output_scale=c_float(facts.output.scale), output_zero_point=facts.output.zero_point,
        n_classes=len(info["class_names"]), class_names=[c_string(n) for n in info["class_names"]],
        host_arena=host_arena, arena_bytes=arena, arena_comment=arena_comment,
        arena_on_heap=1 if board.data["arena_on_heap"] else 0, baud=int(board.data["serial_baud"]),
        serial_wait_ms=int(board.data["serial_wait_ms"]))


def _render(folder: Path, files: Mapping[str, str]) -> None:
    """Write ``files`` (path relative to ``folder`` -> text) into ``folder``."""
    for rel, text in sorted(files.items()):
        p = Path(folder) / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)


def _write_atomically(out_dir: Path, files: Mapping[str, str], before_swap=None) -> None:
    """Render ``files`` into a temporary folder beside ``out_dir``, call ``before_swap(tmp)``
    (compiling there; an exception leaves the previous project as it was), then swap it in."""
    out_dir = Path(out_dir)
    if out_dir.exists() and not (out_dir / BUILD_MANIFEST).is_file() and any(out_dir.iterdir()):
        raise CodegenError(f"{out_dir} exists and is not a fedtiny firmware project; refusing to replace it")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    old = None
    try:
        _render(tmp, files)
        os.chmod(tmp, 0o755)
        if before_swap is not None:
            before_swap(tmp)
        if out_dir.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.old.", dir=out_dir.parent))
            old.rmdir()
            out_dir.rename(old)
        tmp.rename(out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        if old is not None and old.exists() and not out_dir.exists():
            old.rename(out_dir)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def resolve_runtime(brd: Board, runtime: str | None) -> str:
    """The runtime to build: ``runtime``, or the board's default. Raises CodegenError when the
    board cannot be built with it (saying why for qemu-m4 and TFLM)."""
    from .boards import RUNTIMES

    rt = brd.default_runtime if runtime is None else str(runtime)
    if rt not in RUNTIMES:
        raise CodegenError(f"unknown runtime {rt!r} (runtimes: {', '.join(RUNTIMES)})")
    if rt not in brd.runtimes:
        why = (brd.data.get("tflm", {}) or {}).get("why", "") if rt == "tflm" else ""
        raise CodegenError(f"board {brd.name} cannot be built with the {rt} runtime"
                           + (f": {why}" if why else "") + f" (runtimes of {brd.name}: {', '.join(brd.runtimes)})")
    return rt


def build_project(run_dir, device: int, board: str = "nano33ble", out_dir=None,
                  test_samples: int | None = None, compile: bool = True, *,
                  runner: piomod.Runner | None = None, op_table: Mapping[str, str] | None = None,
                  host_arena: int | None = None, runtime: str | None = None, input: str = "windows",
                  sensor: str | None = None, hop: int | None = None, recording=None,
                  trainable_head: bool = False, head_batch: int | None = None,
                  head_windows: int | None = None, board_revision: str | None = None,
                  inference_us: int | None = None) -> BuildResult:
    """Generate (and, where PlatformIO can, compile) device ``device``'s firmware project.

    ``board``: a built-in board name or a board JSON path. ``test_samples``: cap on embedded test
    windows (default: all that fit). ``runner``: how ``pio`` is invoked (tests inject one).
    ``op_table``: the op -> resolver-method table (default ``ops.OP_TABLE``). ``host_arena``: the
    host tflite-micro arena figure to start from (default: device.json's ``arena_bytes``, which the
    trainer measured on the same model bytes; measured here if absent). Raises CodegenError on any
    user error. ``runtime``: ``tflm`` (the TFLM sketch, default of the real boards) or
    ``compiled`` (the model as generated C, ``build_compiled``; the only runtime of qemu-m4).
    ``input``: ``windows`` (embedded test windows and infer payloads) or ``sensor`` (also live and
    capture from the board's ``sensor``, ``codegen.live``: ``hop`` samples between decisions,
    ``recording`` an int16 .npy for the sim sensor, ``board_revision`` the board revision of a
    sensor that depends on it: the Nano 33 BLE's IMU; ``inference_us`` the front end + model time
    the user measured on the board, checked against the hop instead of the estimate).
    ``trainable_head``: the compiled runtime with the board-trainable float32 head
    (``compiled.head``), ``head_batch`` windows per step and room for ``head_windows`` windows.
    """
    brd = load_board(board)
    rt = resolve_runtime(brd, runtime)
    run_dir = Path(run_dir)
    if trainable_head and rt != "compiled":
        raise CodegenError("--trainable-head needs --runtime compiled (the head is plain C beside the compiled model)")
    if rt == "compiled":
        return build_compiled(run_dir, device, brd, out_dir, test_samples, compile, runner=runner,
                              input=input, sensor=sensor, hop=hop, recording=recording,
                              trainable_head=trainable_head, head_batch=head_batch, head_windows=head_windows,
                              board_revision=board_revision, inference_us=inference_us)
    if input not in P.INPUTS:
        raise CodegenError(f"unknown input {input!r} (inputs: {', '.join(P.INPUTS)})")
    rd = _load(run_dir, device)
    model = rd.model_bytes
    sha256 = rd.model_sha256                       # load_run_device checked it against the bytes
    facts = read_model(model)
    calls = resolver_calls(facts.ops, op_table)
    check_library(facts, brd)                      # features the board's TFLM library lacks
    _check_model(facts, rd.info, rd.x_int8)
    if host_arena is None and int(rd.info.get("arena_bytes") or 0) > 0:
        host_arena = int(rd.info["arena_bytes"])   # the trainer measured these very bytes (same hash)
    if host_arena is None:
        from fedtiny.trainer.tflm import arena_bytes

        try:
            host_arena = int(arena_bytes(model))
        except Exception as e:  # noqa: BLE001 - tflite-micro failing on the model is a user-facing fact
            raise CodegenError(f"tflite-micro could not run the model to size its arena: {e}") from None
    arena = fitmod.arena_with_margin(host_arena)
    tw = test_windows(rd, facts, int(device))
    fit = fitmod.plan_fit(brd, device, len(model), tw.window_bytes, len(rd.y), test_samples,
                          arena + tw.frontend_ram)
    n = fit.n_test
    spec, rec = _live_input(input, brd, rd, facts, tw, hop, sensor, recording, board_revision)
    ram_used = fit.ram_used + _live_ram(spec, facts)
    _check_live_fit(spec, brd, device, fit.flash_used, ram_used, fit)
    estimate = _estimate_live(brd, "tflm", spec, rd, facts, tw, n, int(device), sha256, inference_us=inference_us)

    files: dict[str, str] = {}
    from . import live

    env_board = brd
    if spec is not None and live.lib_deps(brd, spec):
        env_board = Board({**brd.data, "platformio": {**brd.pio, "lib_deps": list(brd.pio["lib_deps"]) +
                                                      live.lib_deps(brd, spec)}}, brd.path)
    files["platformio.ini"] = platformio_ini(
        [env_board], f"fedtiny firmware of device {int(device)}{_named(rd.info)} for {brd.name} (GENERATED by fedtiny build).")
    files["include/fedtiny_protocol.h"] = P.render_c_header()
    files["include/fedtiny_config.h"] = config_header(
        **config_values(brd, device, rd.info, facts, sha256, host_arena, arena))
    files.update(model_files(model, int(device), sha256))
    files.update(tw.frontend_files)
    files.update(test_files(tw.x[:n], rd.y[:n], int(device), tw.window_values))
    files["src/main.cpp"] = render_sketch(sketch_context(brd, calls, live=spec is not None))
    if spec is not None:
        from .compiled.project import board_config

        files.update(live.live_files(spec, rec, brd))
        files["include/ft_board_config.h"] = board_config(brd, live=True)
    out = Path(out_dir) if out_dir is not None else default_out_dir(run_dir, device, brd)
    manifest = {
        "board": brd.name, "env": brd.env, "device": int(device), "model_sha256": sha256,
        "model_bytes": len(model), "ops": list(facts.ops), "input_shape": list(facts.input.shape),
        "frontend": tw.frontend,
        "fc_weight_scales": [w.n_scales for w in facts.fc_weights],
        "host_arena_bytes": host_arena, "arena_bytes": arena, "arena_margin": fitmod.ARENA_MARGIN_TEXT,
        "test_samples": n, "flash_used": fit.flash_used, "flash_budget": fit.flash_budget,
        "ram_used": ram_used, "ram_budget": fit.ram_budget, "protocol_version": P.PROTOCOL_VERSION,
        "serial_baud": int(brd.data["serial_baud"]), "usb_ids": list(brd.data["usb_ids"]),
        "native_usb": bool(brd.data["native_usb"]), "runtime": "tflm", "input": input,
    }
    if spec is not None:
        manifest["live"] = {**_live_manifest(spec), **estimate}
    files[BUILD_MANIFEST] = dumps_strict(manifest, indent=2) + "\n"
    _write_atomically(out, files)

    compiled, hint = compile_project(out, brd, compile, runner)
    return BuildResult(out, brd.name, int(device), len(model), arena, n, fit.flash_used,
                       fit.flash_budget, ram_used, fit.ram_budget, compiled, _with_estimate(hint, estimate),
                       live=spec, time_estimate=estimate.get("time_estimate"))


def _with_estimate(hint: str, estimate: dict) -> str:
    """The compile hint, plus the reason when a live build's inference time was not estimated."""
    if estimate.get("estimated_us") is None and estimate.get("measured_us") is None and estimate.get("time_estimate"):
        return f"{hint}; inference time {estimate['time_estimate']}"
    return hint


def _compiled_files(brd: Board, program, device: int, rd, facts: ModelFacts, sha256: str, arena: int,
                    tw: TestWindows, n: int, spec, rec, head_h: str | None = None,
                    feature_layers: int = 0) -> dict[str, str]:
    """The sources of a compiled-runtime project of ``brd`` (no manifest, no build.sh): the model
    as C, the application and board glue, sensor input (``spec``), config, front end, ``n`` test
    windows."""
    from . import live
    from .compiled import head as headmod
    from .compiled.project import project_files

    if head_h is None:
        head_h = headmod.config_header(None)
    comment = [f"Activation buffer of the compiled runtime: {arena} B (ft_model.h FT_MODEL_ARENA_BYTES,",
               "one static buffer planned at build time; no interpreter, no TFLM arena)."]
    files: dict[str, str] = project_files(brd, program, int(device), sha256, head_h, feature_layers,
                                          live=spec is not None,
                                          lib_deps=live.lib_deps(brd, spec) if spec is not None else None)
    if spec is not None:
        files.update(live.live_files(spec, rec, brd))
    files["include/fedtiny_protocol.h"] = P.render_c_header()
    files["include/fedtiny_config.h"] = config_header(
        **config_values(brd, device, rd.info, facts, sha256, arena, arena, comment))
    files.update(tw.frontend_files)
    files.update(test_files(tw.x[:n], rd.y[:n], int(device), tw.window_values, source="src/test_data.c"))
    return files


def _measure(project: Path):
    """(probe windows, worst front end + model instructions) of a qemu-m4 project, run on QEMU
    (``codegen.probe``): the one measurement behind qemu-m4's check and the boards' estimate."""
    from .probe import probe

    windows = probe(project)
    return windows, max(w.frontend_instructions + w.model_instructions for w in windows)


def _given_time(brd: Board, spec, inference_us) -> dict:
    """The manifest's ``live`` entries of a PlatformIO board's live build given the inference time
    the user measured on the board (``--inference-us``), checked against the hop (CodegenError when
    over it, or when the build has no estimate to replace)."""
    from . import live

    if spec is None:
        raise CodegenError("--inference-us needs --input sensor (it is checked against the live hop)")
    if not brd.uses_platformio:
        where = (f"{brd.name} measures the inference time itself" if brd.data.get("qemu") else
                 f"board {brd.name} has no estimate to replace")
        raise CodegenError("--inference-us replaces the estimated inference time of an --input sensor build "
                           f"for a PlatformIO board; {where}")
    if isinstance(inference_us, bool) or int(inference_us) != inference_us or inference_us <= 0:
        raise CodegenError(f"--inference-us must be a positive whole number of microseconds, not {inference_us}")
    how = "measured on the board, given with --inference-us; not estimated"
    live.check_budget(spec, int(inference_us), how, "us")
    return {"estimated_instructions": None, "estimated_us": None, "measured_us": int(inference_us),
            "time_estimate": f"{int(inference_us):,} us ({how})"}


def _estimate_live(brd: Board, runtime: str, spec, rd, facts: ModelFacts, tw: TestWindows, n: int, device: int,
                   sha256: str, program=None, head_h: str | None = None, feature_layers: int = 0,
                   inference_us: int | None = None) -> dict:
    """A live build for a PlatformIO board: its inference time estimated (``codegen.timing``) from
    the same front end + model as compiled-runtime C, built for qemu-m4 and run by the probe.
    Returns the manifest's ``live`` entries; refuses (CodegenError) when the estimate exceeds the
    hop. When it cannot be estimated here, the entries say why (``estimated_us`` None). No-op
    ({}) for other builds. ``inference_us``: the time the user measured on the board (the live
    lines' ``us=``), checked against the hop in place of the estimate (``measured_us``); the
    estimate, deliberately high, would otherwise refuse a model the board is known to run in time."""
    if inference_us is not None:
        return _given_time(brd, spec, inference_us)
    if spec is None or not brd.uses_platformio:
        return {}
    from dataclasses import replace

    from . import live
    from . import timing as tm
    from .compiled.emit import plan
    from .compiled.graph import lower
    from .probe import tools_missing

    t = tm.board_timing(brd)
    why = None
    if t is None:
        why = f"board file {brd.path.name} has no timing section"
    elif runtime not in t.runtime_factor:
        why = f"the timing section of {brd.path.name} has no runtime_factor for {runtime}"
    else:
        why = tools_missing()
    if why is None and program is None:
        try:
            program = lower(rd.model_bytes)
        except CodegenError as e:
            why = f"the compiled runtime, whose C is what is timed, cannot express this model ({e})"
    if why is not None:
        return {"estimated_instructions": None, "estimated_us": None, "time_estimate": f"not estimated: {why}"}
    qemu = load_board("qemu-m4")
    # the board's sensor code is not timed (Arduino code): the same stream read by the user sensor
    qspec = replace(spec, source="user", revision=None, full_scale=())
    files = _compiled_files(qemu, program, device, rd, facts, sha256, plan(program).arena_bytes, tw, n, qspec,
                            None, head_h, feature_layers)
    with tempfile.TemporaryDirectory(prefix="fedtiny-estimate-") as tmp:
        _render(Path(tmp), files)
        windows, worst = _measure(Path(tmp))
    us = tm.worst_estimate_us(windows, t, runtime)
    f_model = t.runtime_factor[runtime]
    how = (f"estimated, not measured: front end + model {worst:,} Cortex-M4 instructions on QEMU, worst of "
           f"{len(windows)} test window(s), x {t.runtime_factor['compiled']:g} (front end) / {f_model:g} (model, "
           f"{runtime}) x {t.cycles_per_instruction:g} cycles per instruction at {t.clock_mhz:g} MHz")
    live.check_budget(spec, us, how, "us", " (or, if the board runs it faster, give the time it measured with "
                                           "--inference-us)")
    return {"estimated_instructions": worst, "estimated_us": us, "time_estimate": f"{us:,} us ({how})"}


def _live_input(input: str, brd: Board, rd, facts: ModelFacts, tw: TestWindows, hop, sensor, recording,
                board_revision):
    """(LiveSpec, sim recording or None) of an ``--input sensor`` build, (None, None) otherwise."""
    from . import live

    if input not in P.INPUTS:
        raise CodegenError(f"unknown input {input!r} (inputs: {', '.join(P.INPUTS)})")
    if input != "sensor":
        if board_revision is not None:
            raise CodegenError("--board-revision only matters with --input sensor")
        return None, None
    shape = facts.input.shape
    t, c = (int(shape[-2]), int(shape[-1])) if len(shape) >= 3 else (facts.input.size, 1)
    if tw.frontend != "raw":
        from .frontend_c import frontend_of

        fd = frontend_of(rd.info)
        t, c = int(fd["window"]), int(fd["channels"])
    spec = live.live_spec(brd, rd.info, t, c, hop, sensor, board_revision)
    rec = None
    if spec.source == "sim":
        if recording is not None:
            rec = live.load_recording(Path(recording), c)
        else:   # a raw model's windows are its int8 inputs: back to model units, then counts
            units = facts.input.scale * (rd.x_int8.astype(np.float64) - facts.input.zero_point)
            rec = live.recording_from_run(units, rd.raw_int16)
    elif recording is not None:
        raise CodegenError(f"--recording is played by the sim sensor only (this build reads {spec.source})")
    return spec, rec


def _live_ram(spec, facts: ModelFacts) -> int:
    """RAM of sensor input: the frame ring and its gap counts, a frames line, the model input."""
    if spec is None:
        return 0
    return (spec.window + spec.hop) * (2 * spec.channels + 4) + 2 * P.FRAMES_MAX_VALUES + int(facts.input.size)


def _check_live_fit(spec, brd: Board, device: int, flash_used: int, ram_used: int, fit) -> None:
    if spec is None:
        return
    for what, used, budget in (("flash", flash_used, fit.flash_budget), ("RAM", ram_used, fit.ram_budget)):
        if used > budget:
            raise CodegenError(f"device {device} with sensor input does not fit {brd.name} {what}: "
                               f"{used:,} of {budget:,} bytes (recording and frame ring included)")


def _live_manifest(spec, rec=None, recording=None) -> dict:
    from dataclasses import asdict

    out = asdict(spec)
    out["full_scale"] = list(spec.full_scale)
    if rec is not None:
        out["recording_frames"] = int(len(rec))
        out["recording"] = str(recording) if recording is not None else "test windows"
    return out


def compile_project(project: Path, board: Board, compile: bool = True,
                    runner: piomod.Runner | None = None) -> tuple[bool, str]:
    """``(compiled, hint)``. Runs ``pio run -d PROJECT -e ENV`` through ``runner`` only when the
    pio executable and the board's platform are installed; never touches the network otherwise."""
    pio = piomod.find_pio()
    argv = piomod.compile_argv(pio or "pio", project, board.env)
    cmd = piomod.shell_join(argv)
    if pio is None:
        return False, (f"not compiled: PlatformIO is not installed (no pio/platformio executable); "
                       f"install it (pip install platformio) and run: {cmd}")
    platform, note = piomod.installed_platform(board)
    if platform is None:
        return False, (f"not compiled: {note}; compiling needs PlatformIO's platform packages, "
                       f"which PlatformIO downloads on first use (network needed); run: {cmd}")
    if not compile:
        return False, f"not compiled (compile disabled); run: {cmd}"
    rc = (runner or piomod.run_command)(argv)
    if rc != 0:
        raise CodegenError(f"PlatformIO build failed (exit {rc}): {cmd}")
    return True, cmd


def _head_config(run_dir: Path, rd, brd: Board, program, arena: int, frontend_ram: int, trainable: bool,
                 batch: int | None, windows: int | None):
    """(ft_head_config.h text, feature layers, plan or None); the plan is checked against the
    board's RAM budget here, before anything is written."""
    from .compiled import head as headmod

    if not trainable:
        return headmod.config_header(None), 0, None
    weights = headmod.global_head(run_dir)
    plan = headmod.make_plan(program, weights, headmod.DEFAULT_BATCH if batch is None else int(batch),
                             headmod.DEFAULT_WINDOWS if windows is None else int(windows))
    split = headmod.split_index(program)
    rest = (arena + frontend_ram + int(brd.budget["runtime_ram_bytes"]) + fitmod.sketch_buffer_bytes(0))
    headmod.check_budget(plan, brd, rest)
    feat = program.layers[split - 1]
    try:
        metric = str(json.loads((run_dir / "config.json").read_text()).get("threshold_metric") or "balanced_accuracy")
    except (OSError, ValueError):
        metric = "balanced_accuracy"
    text = headmod.config_header(plan, weights, feat.out_scale, feat.out_zero_point,
                                 float(rd.info["threshold"]), metric)
    return text, split, plan


def build_compiled(run_dir: Path, device: int, brd: Board, out_dir=None, test_samples: int | None = None,
                   compile: bool = True, *, runner: piomod.Runner | None = None, input: str = "windows",
                   sensor: str | None = None, hop: int | None = None, recording=None, trainable_head: bool = False,
                   head_batch: int | None = None, head_windows: int | None = None,
                   board_revision: str | None = None, inference_us: int | None = None) -> BuildResult:
    """The ``compiled`` runtime: the model as C (``compiled.graph`` + ``compiled.emit``), the
    protocol application in C and the board's glue (``compiled.project``). qemu-m4 projects are
    compiled with arm-none-eabi-gcc inside the temporary folder, before it replaces the old
    project (so a failed compile changes nothing); PlatformIO boards as in the TFLM build."""
    from . import armgcc
    from .compiled.emit import plan
    from .compiled.graph import lower
    from .compiled.project import build_script

    rd = _load(run_dir, device)
    model = rd.model_bytes
    sha256 = rd.model_sha256
    facts = read_model(model)
    program = lower(model)                          # refuses unsupported ops and variants by name
    _check_model(facts, rd.info, rd.x_int8)
    arena = plan(program).arena_bytes
    tw = test_windows(rd, facts, int(device))
    head_h, feature_layers, head_plan = _head_config(run_dir, rd, brd, program, arena, tw.frontend_ram,
                                                     trainable_head, head_batch, head_windows)
    head_ram = head_plan.total_bytes if head_plan is not None else 0
    fit = fitmod.plan_fit(brd, device, 0, tw.window_bytes, len(rd.y), test_samples,
                          arena + tw.frontend_ram + head_ram)
    n = fit.n_test
    spec, rec = _live_input(input, brd, rd, facts, tw, hop, sensor, recording, board_revision)
    flash_used = fit.flash_used + (0 if rec is None else int(rec.size) * 2)   # the recording in flash
    ram_used = fit.ram_used + _live_ram(spec, facts)
    _check_live_fit(spec, brd, device, flash_used, ram_used, fit)
    from . import live

    estimate = _estimate_live(brd, "compiled", spec, rd, facts, tw, n, int(device), sha256, program, head_h,
                              feature_layers, inference_us)
    files = _compiled_files(brd, program, int(device), rd, facts, sha256, arena, tw, n, spec, rec, head_h,
                            feature_layers)
    c_sources = armgcc.sources(files)
    cmd = "" if brd.uses_platformio else armgcc.shell_join(armgcc.compile_argv(brd, c_sources))
    if cmd:
        files["build.sh"] = build_script(cmd)
    manifest = {
        "board": brd.name, "env": brd.env, "device": int(device), "model_sha256": sha256,
        "model_bytes": len(model), "ops": list(facts.ops), "input_shape": list(facts.input.shape),
        "frontend": tw.frontend,
        "fc_weight_scales": [w.n_scales for w in facts.fc_weights], "runtime": "compiled",
        "arena_bytes": arena, "layers": [layer.kind for layer in program.layers],
        "test_samples": n, "flash_used": flash_used, "flash_budget": fit.flash_budget,
        "ram_used": ram_used, "ram_budget": fit.ram_budget, "protocol_version": P.PROTOCOL_VERSION,
        "serial_baud": int(brd.data["serial_baud"]), "usb_ids": list(brd.data["usb_ids"]),
        "native_usb": bool(brd.data["native_usb"]), "clock": brd.clock, "input": input,
        "trainable_head": head_plan.to_dict() if head_plan is not None else None,
    }
    if spec is not None:
        manifest["live"] = {**_live_manifest(spec, rec, recording), **estimate}
    if cmd:
        manifest.update(build=brd.build_system, compile_command=cmd, elf=armgcc.ELF)
    out = Path(out_dir) if out_dir is not None else default_out_dir(run_dir, device, brd)
    state = {"compiled": False, "hint": "", "sizes": None}

    def compile_here(tmp: Path) -> None:
        if not cmd:
            return
        if not compile:
            state["hint"] = f"not compiled (compile disabled); run: sh {out}/build.sh"
            return
        if armgcc.find_tool(str(brd.toolchain["cc"])) is None:
            state["hint"] = (f"not compiled: {brd.toolchain['cc']} is not installed "
                             f"({armgcc.install_hint(brd)}); then run: sh {out}/build.sh")
            return
        armgcc.compile_project(tmp, brd, c_sources)
        sizes = armgcc.size_of(tmp / armgcc.ELF, str(brd.toolchain["size"]))
        if spec is not None and brd.qemu:    # measured on QEMU before anything is swapped in
            windows, worst = _measure(tmp)
            live.check_budget(spec, worst, f"measured on QEMU: front end + model, worst of {len(windows)} "
                              "test windows", "instructions")
            manifest["live"]["measured_instructions"] = worst
        state.update(compiled=True, hint=cmd, sizes=sizes)
        manifest["elf_sizes"] = sizes
        (tmp / BUILD_MANIFEST).write_text(dumps_strict(manifest, indent=2) + "\n")

    files[BUILD_MANIFEST] = dumps_strict(manifest, indent=2) + "\n"
    _write_atomically(out, files, before_swap=compile_here)
    if brd.uses_platformio:
        compiled, hint = compile_project(out, brd, compile, runner)
    else:
        compiled, hint = state["compiled"], state["hint"]
    return BuildResult(out, brd.name, int(device), len(model), arena, n, flash_used,
                       fit.flash_budget, ram_used, fit.ram_budget, compiled, _with_estimate(hint, estimate),
                       runtime="compiled", sizes=state["sizes"], live=spec,
                       head_plan=head_plan.to_dict() if head_plan is not None else None,
                       time_estimate=estimate.get("time_estimate"))
