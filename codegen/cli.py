"""``fedtiny build`` and ``fedtiny flash``: firmware project generation and upload."""
from __future__ import annotations

import json
from pathlib import Path

import click

from fedtiny.errors import friendly

from . import pio as piomod
from .boards import board_names, load_board
from .errors import CodegenError


def _device(run: Path, device: str) -> int:
    """``--device`` as a number: a device name of the run, or a number."""
    from fedtiny.trainer.rundir import resolve_device

    try:
        return resolve_device(run, device)
    except ValueError as e:
        raise CodegenError(str(e)) from None


def _run_dir(run: str | None) -> Path:
    if run is not None:
        return Path(run)
    from fedtiny.bench.rundata import BenchError, default_run

    try:
        return default_run()
    except BenchError as e:
        raise CodegenError(str(e).replace(", or --no-run", "")) from None


BOARD_HELP = f"Board name ({', '.join(board_names())}) or path to a board .json file."


def _margin(used: int, budget: int) -> str:
    return f"{used:,} of {budget:,} bytes used, margin {budget - used:,} bytes ({100.0 * (budget - used) / budget:.1f}%)"


@click.command("build")
@click.option("--device", "-d", required=True,
              help="Device whose model to build: its name (a fleet folder's device folder) or number.")
@click.option("--board", "-b", default="nano33ble", show_default=True,
              help=BOARD_HELP)
@click.option("--run", "run", type=click.Path(file_okay=False), default=None,
              help="Run directory (default: newest runs/* with a report.json).")
@click.option("--out", "out", type=click.Path(file_okay=False), default=None,
              help="Project folder to write (default: RUN/firmware/devNN-BOARD/); replaced atomically.")
@click.option("--test-samples", type=int, default=None,
              help="Embed at most this many test windows (default: all that fit the flash budget).")
@click.option("--compile/--no-compile", "do_compile", default=True, show_default=True,
              help="Compile: with PlatformIO when it and the board's platform are installed; "
                   "qemu-m4 with arm-none-eabi-gcc.")
@click.option("--runtime", type=click.Choice(["tflm", "compiled"]), default=None,
              help="tflm: the TFLM interpreter sketch (default of esp32dev and nano33ble); compiled: "
                   "the model as generated C, no TFLM library (the only runtime of qemu-m4).")
@click.option("--input", "input_", type=click.Choice(["windows", "sensor"]), default="windows", show_default=True,
              help="windows: classify the embedded test windows and infer payloads; sensor: also read the "
                   "board's sensor (live and capture commands; either runtime).")
@click.option("--sensor", default=None,
              help="Sensor source of --input sensor (sim, imu, adc, user; default: the board file's).")
@click.option("--board-revision", default=None,
              help="--input sensor on a board whose sensor depends on its revision: nano33ble rev1 "
                   "(LSM9DS1 IMU) or rev2 (BMI270 + BMM150 IMU; printed on the board as 'Rev2').")
@click.option("--hop", type=int, default=None,
              help="Samples between two live decisions (default: half the window).")
@click.option("--inference-us", type=int, default=None,
              help="--input sensor on nano33ble/esp32dev: front end + model time per decision you measured on "
                   "the board (the largest us= of its live event lines), checked against the hop instead of "
                   "the build's estimate, which is deliberately high.")
@click.option("--recording", type=click.Path(dir_okay=False), default=None,
              help="--sensor sim: int16 (N, channels) .npy counts to play (default: the run's test "
                   "windows one after another).")
@click.option("--trainable-head", is_flag=True,
              help="Compiled runtime: the board can fine-tune the model's head in float32 (SGD with momentum) "
                   "on windows it is sent, starting from the run's global model (fedtiny personalize).")
@click.option("--head-batch", type=int, default=None,
              help="--trainable-head: windows per training step (default 8; part of the RAM plan).")
@click.option("--head-windows", type=int, default=None,
              help="--trainable-head: windows the board can hold (default 512; part of the RAM plan).")
@friendly
def build(device, board, run, out, test_samples, do_compile, runtime, input_, sensor, board_revision, hop,
          inference_us, recording, trainable_head, head_batch, head_windows):
    """Generate the firmware project of one device of a run (TFLM sketch or compiled C)."""
    from .build import build_project

    brd = load_board(board)
    device = _device(_run_dir(run), device)
    if not trainable_head and (head_batch is not None or head_windows is not None):
        raise CodegenError("--head-batch and --head-windows need --trainable-head")
    r = build_project(_run_dir(run), device, board, out, test_samples, do_compile, runner=RUNNER,
                      runtime=runtime, input=input_, sensor=sensor, hop=hop, recording=recording,
                      trainable_head=trainable_head, head_batch=head_batch, head_windows=head_windows,
                      board_revision=board_revision, inference_us=inference_us)
    click.echo(f"wrote {r.project_dir}")
    click.echo(f"  board        {r.board} ({brd.describe()})")
    click.echo(f"  runtime      {r.runtime}" + (" (the model as generated C, no TFLM library)"
                                                 if r.runtime == "compiled" else " (TFLM interpreter)"))
    if not brd.uses_platformio:
        click.echo(f"  toolchain    {brd.toolchain['cc']}, not PlatformIO: {brd.toolchain['why_not_platformio']}")
    from fedtiny.trainer.rundir import device_label, run_device_names

    names = run_device_names(_run_dir(run))
    label = device_label(names, r.device)
    click.echo(f"  device       {label}" + (f" (device {r.device} of the run)" if names else ""))
    click.echo(f"  model        {r.model_bytes:,} bytes")
    if r.runtime == "compiled":
        click.echo(f"  activations  {r.arena_bytes:,} bytes (one static buffer, planned at build time)")
    else:
        click.echo(f"  arena        {r.arena_bytes:,} bytes allocated by the firmware")
    click.echo(f"  test windows {r.test_samples}")
    if r.live:
        v = r.live
        click.echo(f"  sensor       {v.source}: {v.channels} channels at {v.rate_hz} Hz, window {v.window}, "
                   f"hop {v.hop} samples = budget {v.budget:,} {'instructions' if brd.clock == 'icount' else 'us'}"
                   + (f", board {v.revision}" if v.revision else ""))
        if r.time_estimate:
            click.echo(f"  inference    {r.time_estimate}")
    if r.head_plan:
        h = r.head_plan
        click.echo(f"  head         trainable float32 {h['n_in']} -> {h['n_hidden']} -> {h['n_classes']}: training "
                   f"plan {h['total_bytes']:,} B RAM (parameters, gradients, momentum {h['state_bytes']:,} B; batch of "
                   f"{h['batch']} {h['batch_bytes']:,} B; {h['max_windows']} windows {h['store_bytes']:,} B; staging "
                   f"{h['input_bytes']:,} B)")
    click.echo(f"  flash        {_margin(r.flash_used, r.flash_budget)}")
    click.echo(f"  RAM          {_margin(r.ram_used, r.ram_budget)}")
    if r.sizes:
        z = r.sizes
        click.echo(f"  ELF          text {z['text']:,} B, data {z['data']:,} B, bss {z['bss']:,} B, "
                   f"stack {z['stack']:,} B reserved (arm-none-eabi-size)")
    click.echo(f"  compiled     yes: {r.compile_hint}" if r.compiled else f"  {r.compile_hint}")
    if not brd.uses_platformio and r.compiled:
        click.echo(f"  run it       fedtiny flash --device {label if names else r.device} --board {r.board}"
                   + (f" --run {run}" if run else "") + " (starts QEMU, prints the serial pty)")


def _usb_identity(port: str | None, usb_ids: list[str]):
    """(vid, pid, serial) of the board to wait for after upload: the given port's, else the first
    attached port whose VID:PID is one of the board's."""
    import serial.tools.list_ports

    wanted = {tuple(int(h, 16) for h in u.split(":")) for u in usb_ids}
    for p in serial.tools.list_ports.comports():
        if p.vid is None:
            continue
        if (port is not None and p.device == port) or (port is None and (p.vid, p.pid) in wanted):
            return (p.vid, p.pid, p.serial_number), p.device
    return None, port


@click.command("flash")
@click.option("--device", "-d", required=True, help="Device whose firmware to upload: its name or number.")
@click.option("--board", "-b", default="nano33ble", show_default=True,
              help=BOARD_HELP)
@click.option("--port", "-p", default=None, help="Serial port of the board (default: PlatformIO auto-detects).")
@click.option("--run", "run", type=click.Path(file_okay=False), default=None,
              help="Run directory (default: newest runs/* with a report.json).")
@click.option("--project", type=click.Path(file_okay=False), default=None,
              help="Firmware project folder (default: RUN/firmware/devNN-BOARD/ written by fedtiny build).")
@click.option("--reconnect-wait", type=float, default=15.0, show_default=True,
              help="Seconds to wait for a native-USB board (Nano 33 BLE) to re-enumerate after upload.")
@click.option("--stop", is_flag=True,
              help="qemu-m4: stop the QEMU that an earlier 'fedtiny flash' started for this project.")
@friendly
def flash(device, board, port, run, project, reconnect_wait, stop):
    """Upload a device's firmware project with PlatformIO (pio run -t upload).

    qemu-m4: start QEMU (mps2-an386, -icount shift=0, UART0 on a new pty) on the built ELF, print
    the pty, and run until Ctrl-C or `fedtiny flash --board qemu-m4 --stop`."""
    from .build import BUILD_MANIFEST, default_out_dir

    brd = load_board(board)
    if project and str(device).strip().isdigit():     # the project names its device: no run needed
        device = int(device)
    else:
        device = _device(_run_dir(run), device)
    proj = Path(project) if project else default_out_dir(_run_dir(run), device, brd)
    if not brd.uses_platformio:
        return _flash_qemu(proj, brd, device, run, port, stop)
    if stop:
        raise CodegenError(f"--stop is for QEMU boards (qemu-m4); {brd.name} is a real board")
    if not (proj / "platformio.ini").is_file() or not (proj / BUILD_MANIFEST).is_file():
        raise CodegenError(f"no firmware project at {proj}; run: fedtiny build --device {device} --board {brd.name}")
    built = json.loads((proj / BUILD_MANIFEST).read_text())
    if built.get("board") != brd.name or int(built.get("device", -1)) != int(device):
        raise CodegenError(f"{proj} was built for device {built.get('device')} on {built.get('board')}, "
                           f"not device {device} on {brd.name}")
    exe = piomod.find_pio()
    if exe is None:
        raise CodegenError("PlatformIO is not installed (no pio or platformio executable on PATH); "
                           "install it with: pip install platformio")
    platform, note = piomod.installed_platform(brd)
    argv = piomod.upload_argv(exe, proj, brd.env, port)
    if platform is None:
        raise CodegenError(f"{note}; PlatformIO downloads it on first use (network needed): "
                           f"{piomod.shell_join(argv)}")
    if port is not None and port.startswith("/dev/") and not Path(port).exists():
        import serial.tools.list_ports

        have = ", ".join(p.device for p in serial.tools.list_ports.comports()) or "none"
        raise CodegenError(f"port {port} does not exist (serial ports here: {have})")
    identity, wait_port = _usb_identity(port, list(brd.data["usb_ids"])) if brd.data["native_usb"] else (None, port)
    click.echo(f"uploading {proj} to {brd.name}: {piomod.shell_join(argv)}")
    rc = RUNNER(argv)
    if rc != 0:
        raise CodegenError(f"PlatformIO upload failed (exit {rc}): {piomod.shell_join(argv)}")
    if brd.data["native_usb"] and (identity is not None or wait_port is not None):
        from fedtiny.bench.ports import wait_for_port

        back = wait_for_port(wait_port or "", identity, reconnect_wait)
        if back is None:
            raise CodegenError(f"upload finished but the board did not come back on USB within {reconnect_wait:g} s")
        click.echo(f"board is back on {back}")
    click.echo(f"flashed device {device} to {brd.name}; bench it with: fedtiny bench --port "
               f"{port or 'PORT'} --device {device}" + (f" --run {run}" if run else ""))


def _flash_qemu(proj: Path, brd, device: int, run: str | None, port: str | None, stop: bool) -> None:
    from . import qemu
    from .build import BUILD_MANIFEST

    if port is not None:
        raise CodegenError(f"--port does not apply to {brd.name}: QEMU creates the pty and prints it")
    if stop:
        rec = qemu.stop_recorded(proj, brd)
        click.echo(f"stopped QEMU (pid {rec['pid']}, {rec['port']})" if rec else f"no QEMU runs for {proj}")
        return
    if not (proj / BUILD_MANIFEST).is_file():
        raise CodegenError(f"no firmware project at {proj}; run: fedtiny build --device {device} --board {brd.name}")
    built = json.loads((proj / BUILD_MANIFEST).read_text())
    if built.get("board") != brd.name or int(built.get("device", -1)) != int(device):
        raise CodegenError(f"{proj} was built for device {built.get('device')} on {built.get('board')}, "
                           f"not device {device} on {brd.name}")
    elf = proj / str(built.get("elf", "build/firmware.elf"))
    if not elf.is_file():
        raise CodegenError(f"{proj} has no compiled firmware ({elf}); build it with arm-none-eabi-gcc: "
                           f"fedtiny build --device {device} --board {brd.name}")
    hint = "bench it with: fedtiny bench --port {port} --device %d%s" % (device, f" --run {run}" if run else "")
    where = f" --run {run}" if run else ""
    stop_command = f"fedtiny flash --device {device} --board {brd.name}{where} --stop"
    qemu.serve(proj, brd, echo=lambda s: click.echo(s), hint=hint, stop_command=stop_command)


RUNNER: piomod.Runner = piomod.run_command  # tests replace this to assert the upload argv
