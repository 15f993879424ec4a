"""``fedtiny bench`` and ``fedtiny emulate`` (click commands, registered lazily by fedtiny.cli).

Exit codes of ``bench``: 0 every decision matches the run's INT8 decisions (or no run to compare
with), or differs only where the board's raw scores are within ``--tolerance-lsb`` of the host's
(``borderline``: counted, listed, not a failure); 1 the bench finished but some decisions differ
beyond that (``mismatch``, see the results files); 2 error (bad port, silent device, a port that
carries no fedtiny frame, other protocol version, model hash differs, ...): one ``error: ...``
line on stderr, and no results file of the failed board.
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

import click

from fedtiny.firmware.protocol import DEFAULT_BAUD

from .rundata import BenchError
from .scores import DEFAULT_TOLERANCE_LSB


def _fail(msg: str) -> None:
    click.echo(f"error: {msg}", err=True)
    sys.exit(2)


def _resolve_run(run: str | None, no_run: bool) -> Path | None:
    from .rundata import default_run

    if no_run:
        return None
    if run is not None:
        return Path(run)
    return default_run()


def _fmt_acc(v) -> str:
    return "-" if v is None else f"{100 * v:.1f}%"   # the format of the train and demo tables


def _fmt_lat(v, clock: str) -> str:
    """A latency cell: clock=icount values are instruction counts, never microseconds."""
    return f"{v} instr" if clock == "icount" else str(v)


def _fmt_thr(it) -> str:
    """The threshold cell: the board's threshold and origin (from its banner); an origin that
    differs from the run's device.json is marked in red with '!' (the warning below the table
    names both; the cell stays narrow so the table fits)."""
    if it.threshold_origin_ok is False:
        return f"{it.threshold:.3f} [red]({it.threshold_origin}!)[/]"
    return f"{it.threshold:.3f} ({it.threshold_origin})"


def _table(items, ports):
    from rich.table import Table

    from .host import BenchResult

    t = Table(title="fedtiny bench (latency in µs, measured by the clock in the 'clock' column; "
                    "clock=host means the emulator's host time, not a board; clock=icount means "
                    "instructions counted by QEMU, not µs)")
    for col in ("port", "board", "dev", "clock", "n", "accuracy", "run INT8", "threshold (from)", "mismatch",
                "borderline",
                "p50 µs", "p95 µs", "max µs", "stream acc", "dropped", "status"):
        t.add_column(col, justify="right" if col not in ("port", "board", "clock", "status") else "left")
    for it, port in zip(items, ports):
        if isinstance(it, BenchResult):
            lat = it.latency_us
            status = {"ok": "[green]ok[/]", "borderline": "[yellow]borderline[/]"}.get(it.status, "[red]MISMATCH[/]")
            t.add_row(it.port, it.board, str(it.device_id), it.clock, str(it.n), _fmt_acc(it.accuracy),
                      _fmt_acc(it.expected_accuracy),
                      _fmt_thr(it),
                      str(it.n_mismatch) if it.run_dir else "-",
                      str(it.n_borderline) if it.run_dir else "-",
                      _fmt_lat(lat["p50"], it.clock), _fmt_lat(lat["p95"], it.clock),
                      _fmt_lat(lat["max"], it.clock), _fmt_acc(it.stream["accuracy"]) if it.stream else "-",
                      str(it.link.get("dropped_lines", 0)), status)
        else:
            t.add_row(port, "-", "-", "-", "-", "-", "-", "-", "-", "-", "-", "-", "-", "-", "-", "[red]error[/]")
    return t


@click.command("bench")
@click.option("--port", "port", metavar="PORT", help="Serial port of one board (e.g. /dev/ttyACM0, COM3, or an emulator's pty).")
@click.option("--ports", "ports", metavar="A,B,C", help="Comma-separated ports of several boards.")
@click.option("--all", "all_", is_flag=True, help="Every attached board found by USB VID:PID.")
@click.option("--run", "run", type=click.Path(file_okay=False), default=None,
              help="Run directory (default: newest runs/* with report.json).")
@click.option("--no-run", is_flag=True, help="Bench without a run: no hash check, no expected decisions.")
@click.option("--device", type=int, default=None, help="Device of the run (default: the id in the board's banner).")
@click.option("--stream", type=int, default=0, show_default=True,
              help="Also send N windows of the run's test split with 'infer' (those the firmware does not carry first).")
@click.option("--out", "out", type=click.Path(file_okay=False), default=None,
              help="Results directory (default: RUN/bench/, or results/bench without a run).")
@click.option("--timeout", type=float, default=5.0, show_default=True,
              help="Seconds of silence before a wait fails (handshake, run, infer).")
@click.option("--baud", type=int, default=DEFAULT_BAUD, show_default=True)
@click.option("--passes", type=int, default=3, show_default=True,
              help="Max 'run' passes to collect samples lost on a noisy link.")
@click.option("--reconnect-wait", type=float, default=10.0, show_default=True,
              help="Seconds to wait for a board that dropped off USB (reset, re-enumeration).")
@click.option("--reset", is_flag=True, help="Restart each board first (waits for USB re-enumeration).")
@click.option("--tolerance-lsb", type=int, default=DEFAULT_TOLERANCE_LSB, show_default=True,
              help="A differing decision whose raw scores (fetched with 'infer') are all within this many "
                   "LSB of the host's is 'borderline' (listed, exit 0), beyond it a 'mismatch' (exit 1). "
                   "Measured between the boards' kernels and the host's: 0 LSB for the ops fedtiny's models "
                   "use; the default 1 allows one rounding step of an unchecked kernel library (models of "
                   "older fedtiny versions pool with MEAN, up to 21 LSB apart on the Nano 33 BLE).")
def bench(port, ports, all_, run, no_run, device, stream, out, timeout, baud, passes, reconnect_wait, reset,
          tolerance_lsb):
    """Benchmark one board, several, or an emulated one over serial (protocol v3).

    Checks the board's model hash against the run, evaluates its embedded test windows, compares
    every decision with the run's INT8 decisions, and writes JSON + CSV results."""
    from rich.console import Console

    from .host import BenchResult, bench_device, bench_ports, write_results
    from .ports import find_boards

    try:
        chosen = [x for x in (port, ports, all_) if x]
        if len(chosen) != 1:
            raise BenchError("give exactly one of --port PORT, --ports A,B,C or --all")
        if port:
            port_list = [port]
        elif ports:
            port_list = list(dict.fromkeys(p.strip() for p in ports.split(",") if p.strip()))  # once each
            if not port_list:
                raise BenchError("--ports is empty")
        else:
            port_list = find_boards()
        if stream < 0 or timeout <= 0 or passes < 1 or tolerance_lsb < 0:
            raise BenchError("--stream must be >= 0, --timeout > 0, --passes >= 1 and --tolerance-lsb >= 0")
        run_dir = _resolve_run(run, no_run)
        if stream and run_dir is None:
            raise BenchError("--stream needs a run (--run DIR)")
        if run_dir is not None and device is not None:
            from .rundata import load_run_device
            load_run_device(run_dir, device)       # fail on a bad run before touching ports
        out_dir = Path(out) if out else (run_dir / "bench" if run_dir else Path("results") / "bench")
        kw = dict(baud=baud, passes=passes, reconnect_wait=reconnect_wait, reset=reset,
                  tolerance_lsb=tolerance_lsb)
        err = Console(stderr=True)
        if len(port_list) == 1:
            with err.status(f"benchmarking {port_list[0]} ...") as status:
                def progress(stage, done, total):
                    status.update(f"benchmarking {port_list[0]}: {stage} {done}/{total}")
                items = [bench_device(port_list[0], run_dir, device, stream, timeout, progress=progress, **kw)]
        else:
            with err.status(f"benchmarking {len(port_list)} boards ..."):
                items = bench_ports(port_list, run_dir, device, stream, timeout, **kw)
        good = [it for it in items if isinstance(it, BenchResult)]
    except BenchError as e:
        _fail(str(e))
    out = Console() if sys.stdout.isatty() else Console(width=160)
    out.print(_table(items, port_list))
    try:
        paths = write_results(items, out_dir, port_list)
    except OSError as e:
        _fail(f"cannot write the results to {out_dir}: {e}")
    for it in good:
        if it.clock == "icount":
            lat = it.latency_us
            click.echo(f"latency {it.port}: clock=icount: {lat['p50']} instructions per inference (p50; "
                       f"min {lat['min']}, max {lat['max']}) counted by QEMU -icount, not microseconds "
                       f"of a real board", err=True)
        for w in it.warnings:
            click.echo(f"warning: {it.port}: {w}", err=True)
        diffs = list(it.borderline) + (list(it.stream.get("borderline", [])) if it.stream else [])
        if diffs:
            shown = ", ".join(f"{d['index']} ({d['score_lsb_diff']} LSB)" for d in diffs[:10])
            click.echo(f"borderline: {it.port}: {len(diffs)} decision(s) differ from the run's but the "
                       f"board's scores are within {it.tolerance_lsb} LSB of the host's (windows at the "
                       f"threshold): {shown}{', ...' if len(diffs) > 10 else ''}", err=True)
    for p in paths:
        click.echo(f"wrote {p}")
    failed = [(p, it) for it, p in zip(items, port_list) if isinstance(it, BenchError)]
    for p, e in failed:
        click.echo(f"error: {e}", err=True)
    if failed:
        sys.exit(2)
    if any(not it.ok for it in good):
        click.echo(f"decisions differ from the run's INT8 decisions beyond {tolerance_lsb} LSB of score "
                   f"(mismatch; see the results files)", err=True)
        sys.exit(1)


@click.command("emulate")
@click.option("--run", "run", type=click.Path(file_okay=False), default=None,
              help="Run directory (default: newest runs/* with report.json).")
@click.option("--device", type=int, required=True, help="Device of the run to serve.")
@click.option("--n-test", type=click.IntRange(0), default=None, help="Serve only the first N test windows (as a capped firmware).")
@click.option("--board", default="emulator", show_default=True, help="Board name in the banner.")
@click.option("--link", "link", default=None, help="Also create this symlink to the pty (a stable path).")
@click.option("--corrupt", type=float, default=0.0, show_default=True, help="Fraction of lines with one byte replaced.")
@click.option("--drop", type=float, default=0.0, show_default=True, help="Fraction of bytes lost (newlines included).")
@click.option("--stall", type=float, default=0.0, show_default=True, help="Stall once for SECONDS ...")
@click.option("--stall-after", type=int, default=None, help="... after N lines.")
@click.option("--disconnect-after", type=int, default=None, help="Close the pty for good after N lines.")
@click.option("--reenumerate", type=float, default=None,
              help="On 'reset', vanish for SECONDS and come back as a new pty (like a Nano 33 BLE on USB; use with --link).")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the fault injection.")
@click.option("--score-offset", type=click.IntRange(-255, 255), default=0, show_default=True, metavar="LSB",
              help="Add LSB to the normal-class output before deciding (a board whose kernels round "
                   "differently): small values give borderline decisions, large ones mismatches.")
@click.option("--sensor", default=None, metavar="builtin|FILE",
              help="Play a simulated sensor (live and capture work): the run's built-in generator "
                   "(--segments), or a recording of a fleet folder (FLEET/DEVICE/FILE). Looped.")
@click.option("--segments", default=None, metavar="CLASS:S,...",
              help="Built-in sensor: classes and seconds to play [default: normal 2 s, first fault 2 s, normal 2 s].")
@click.option("--sensor-seed", type=click.IntRange(0), default=0, show_default=True, help="Seed of the built-in sensor.")
@click.option("--hop", type=click.IntRange(1), default=None,
              help="Live: samples between decisions [default: the run's hop, else half the window].")
@click.option("--speed", type=click.FloatRange(0, min_open=True), default=1.0, show_default=True,
              help="Sample clock: frames come at SPEED x the model rate of host time; frames are lost "
                   "while the host does not read (a full pty).")
@click.option("--free-running", is_flag=True,
              help="Sample clock: the next frame whenever the device wants one (nothing is ever lost).")
@click.option("--ring", type=click.IntRange(1), default=None,
              help="Frames the sensor's ring buffer holds [default: one window plus one hop, as a board]; "
                   "a larger ring hides a loaded host's scheduling delays.")
def emulate(run, device, n_test, board, link, corrupt, drop, stall, stall_after, disconnect_after,
            reenumerate, seed, score_offset, sensor, segments, sensor_seed, hop, speed, free_running, ring):
    """Serve a device's model over a pseudo-terminal (protocol v3, latency clock=host); with
    --sensor also live mode and capture on a simulated sensor.

    Prints the pty path on the first line; bench it with `fedtiny bench --port PATH`."""
    from .emulator import main_emulate
    from .rundata import load_run_device

    try:
        if not (0 <= corrupt <= 1 and 0 <= drop <= 1) or stall < 0:
            raise BenchError("--corrupt and --drop are fractions in [0, 1]; --stall >= 0")
        if stall and stall_after is None:
            stall_after = 0
        run_dir = _resolve_run(run, False)
        load_run_device(run_dir, device)
        track = None
        if sensor is not None:
            from fedtiny.firmware.simsensor import SensorError, describe, track_for_run

            try:
                track = track_for_run(run_dir, device, recording=None if sensor == "builtin" else sensor,
                                      segments=segments, seed=sensor_seed)
            except SensorError as e:
                raise BenchError(f"--sensor: {e}") from None
            click.echo(f"sensor: {describe(track)}", err=True)
        elif segments is not None or hop is not None or ring is not None:
            raise BenchError("--segments, --hop and --ring need --sensor")
        main_emulate(run_dir, device, link=link, echo=lambda s: click.echo(s, nl=True),
                     corrupt=corrupt, drop=drop, stall=stall, stall_after=stall_after,
                     disconnect_after=disconnect_after, seed=seed, n_test=n_test, board=board,
                     reenumerate=reenumerate, score_offset=score_offset, sensor=track, hop=hop,
                     speed=None if free_running else speed, ring=ring)
    except BenchError as e:
        _fail(str(e))


def _class_names(run, device) -> list[str] | None:
    """Class names of --run/--device (None without --run)."""
    if run is None:
        return None
    if device is None:
        raise BenchError("--run needs --device (the device the board runs)")
    from .rundata import load_run_device

    return [str(c) for c in load_run_device(Path(run), device).info["class_names"]]


@click.command("monitor")
@click.option("--port", required=True, help="Serial port of a board with sensor input (or the emulator's pty).")
@click.option("--seconds", type=click.FloatRange(0, min_open=True), default=None,
              help="Stop after SECONDS of host time [default: until Ctrl-C].")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write the stream line and every event and beat as JSON lines (FILE.jsonl).")
@click.option("--run", type=click.Path(file_okay=False), default=None,
              help="Run directory whose device the board runs: names the classes.")
@click.option("--device", type=int, default=None, help="Device of --run.")
@click.option("--baud", type=int, default=DEFAULT_BAUD, show_default=True, help="Serial baud rate.")
@click.option("--timeout", type=click.FloatRange(0, min_open=True), default=5.0, show_default=True,
              help="Seconds of silence before giving up (a beat is due every second of samples).")
def monitor(port, seconds, out, run, device, baud, timeout):
    """Watch a board classify its sensor: `live` mode, shown as it comes (current class, recent
    events, dropped samples, latency against the hop budget); `stop` at the end or on Ctrl-C.

    With --out, every event and beat is a JSON line (written whole, so an interrupted monitor leaves
    a valid file). Exit 0 when done, 130 on Ctrl-C, 2 on error."""
    from rich.console import Console
    from rich.live import Live

    from .livehost import monitor as run_monitor

    err = Console(stderr=True)
    live = Live(console=err, auto_refresh=False, transient=False) if err.is_terminal else None
    state = {"t": 0.0}

    def show(st, clock):
        if live is not None and time.monotonic() - state["t"] > 0.2:
            state["t"] = time.monotonic()
            live.update(st.table(port, clock), refresh=True)

    interrupted = False
    st = None
    try:
        names = _class_names(run, device)
        if live is not None:
            live.start()
        try:
            st = run_monitor(port, seconds, out, baud, timeout, names, show)
        except KeyboardInterrupt:
            interrupted = True
        finally:
            if live is not None:
                live.stop()
    except BenchError as e:
        _fail(str(e))
    if st is not None:
        ev = ", ".join(f"{e.n / st.stream.rate_hz:.2f} s {st.name(e.pred)}" for e in st.events[-10:])
        click.echo(f"{port}: {st.n} samples ({st.n / st.stream.rate_hz:.1f} s), {len(st.events)} events"
                   f"{': ' + ev if ev else ''}; dropped {st.dropped}; latency max {st.us_max} of a "
                   f"{st.budget} budget")
    if out is not None:
        click.echo(f"wrote {out}")
    if interrupted:
        click.echo("error: interrupted", err=True)
        sys.exit(130)


@click.command("capture")
@click.option("--port", required=True, help="Serial port of a board with sensor input (or the emulator's pty).")
@click.option("--label", required=True, help="Class of what the sensor sees now (a class of the fleet).")
@click.option("--seconds", type=click.FloatRange(0, min_open=True), required=True, help="Length of the recording.")
@click.option("--out", "out", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Device folder of a fleet folder (FLEET/DEVICE/); created with FLEET/fleet.toml if absent.")
@click.option("--run", type=click.Path(file_okay=False), default=None,
              help="Run directory whose device the board runs: channel names, full scale and units per "
                   "channel (needed when the board's channels differ in scale or unit).")
@click.option("--device", type=int, default=None, help="Device of --run.")
@click.option("--channels", default=None, metavar="A,B,...",
              help="Channel names [default: --run's, else fleet.toml's, else ch0, ch1, ...].")
@click.option("--rate", type=click.FloatRange(0, min_open=True), default=None,
              help="Expected sample rate (Hz): refuse a board that streams another one.")
@click.option("--gaps", type=click.Choice(["split", "refuse"]), default="split", show_default=True,
              help="Lost frames: write each stretch between gaps as its own recording, or write nothing.")
@click.option("--baud", type=int, default=DEFAULT_BAUD, show_default=True, help="Serial baud rate.")
@click.option("--timeout", type=click.FloatRange(0, min_open=True), default=5.0, show_default=True,
              help="Seconds of silence before giving up.")
def capture(port, label, seconds, out, run, device, channels, rate, gaps, baud, timeout):
    """Record labelled sensor data from a board into a fleet folder: `capture`, every frame line
    CRC-checked and its counter checked for continuity, then one CSV recording (channel-name header,
    physical units) and its labels.csv line.

    Lost frames are reported and never interpolated (--gaps). A recording appears whole or not at
    all: temporary files renamed, labels.csv replaced last. Exit 0 done, 130 on Ctrl-C, 2 on error."""
    from fedtiny.trainer.data.fleet import DataError

    from .livehost import run_capture

    try:
        paths, report = run_capture(port, label, seconds, out, run=run, device=device, channels=channels,
                                    rate=rate, gaps=gaps, baud=baud, timeout=timeout)
    except KeyboardInterrupt:
        click.echo("error: interrupted (nothing written)", err=True)
        sys.exit(130)
    except (BenchError, DataError) as e:
        _fail(str(e))
    for line in report:
        click.echo(line, err=True)
    for p in paths:
        click.echo(f"wrote {p}")


@click.command("personalize")
@click.option("--run", "run", type=click.Path(file_okay=False), default=None,
              help="Run directory (default: newest runs/* with report.json).")
@click.option("--device", "-d", required=True, help="Device of the run: its name or number.")
@click.option("--port", "-p", required=True, metavar="PORT",
              help="Serial port of the board running that device's firmware built with --trainable-head "
                   "(a qemu-m4 board: the pty fedtiny flash prints).")
@click.option("--epochs", type=int, default=None, help="Training epochs on the board (default: the run's phase3_epochs).")
@click.option("--lr", type=float, default=0.05, show_default=True, help="SGD learning rate.")
@click.option("--momentum", type=float, default=0.9, show_default=True, help="SGD momentum.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the board's shuffling (xorshift32).")
@click.option("--timeout", type=float, default=60.0, show_default=True,
              help="Seconds of silence before a wait fails (the board answers every window and every epoch).")
@click.option("--baud", type=int, default=DEFAULT_BAUD, show_default=True)
@click.option("--twin-tolerance", type=float, default=1e-4, show_default=True,
              help="Largest |board - host twin| weight difference that counts as agreement (exit 1 beyond).")
def personalize(run, device, port, epochs, lr, momentum, seed, timeout, baud, twin_tolerance):
    """Phase 3 on the board: send the device's Phase-3 windows, train the head there, compare.

    The board (firmware built with --runtime compiled --trainable-head) keeps each window as the
    INT8 extractor's features, fine-tunes the float32 head with SGD + momentum, tunes the threshold
    on the validation windows and decides its embedded test windows. The host twin runs the same
    arithmetic in NumPy float32; the largest weight difference is printed. Writes
    RUN/devices/NAME/board_head.npz (the board's and the twin's weights, the figures as JSON)."""
    from fedtiny.trainer.rundir import RunFileError, resolve_device

    from .personalize import personalize as run_personalize

    try:
        run_dir = _resolve_run(run, False)
        try:
            dev = resolve_device(run_dir, device)
        except ValueError as e:
            raise BenchError(str(e)) from None
        if timeout <= 0:
            raise BenchError("--timeout must be > 0")
        def epoch_line(m):
            click.echo(f"epoch {m.epoch + 1}: loss {m.loss:.4f}, {m.steps} steps", err=True)

        res = run_personalize(port, run_dir, dev, epochs, seed, lr, momentum, timeout, baud,
                              echo=lambda s: click.echo(s, err=True), on_epoch=epoch_line)
    except (BenchError, RunFileError) as e:
        _fail(str(e))
    unit = "instructions (QEMU -icount, not microseconds)" if res.clock == "icount" else "microseconds"
    pct = lambda v: "-" if v is None else f"{100 * v:.1f}%"   # noqa: E731
    host = res.host_phase3
    click.echo(f"device {res.device} ({res.name}) on {res.port}: {res.epochs} epoch(s), {res.n_train} training / "
               f"{res.n_val} validation windows, batch {res.batch}, training plan {res.plan_bytes:,} B RAM")
    click.echo(f"  time per training step   {res.step_units:,.0f} {unit}")
    click.echo(f"  board loss per epoch     {', '.join(f'{v:.4f}' for v in res.board_losses)}")
    click.echo(f"  twin agreement           max |board - twin| weight {res.max_weight_diff:.3g}; threshold "
               f"{res.board_threshold:.6f} (twin {res.twin_threshold:.6f}); features differing in "
               f"{res.feature_mismatches} window(s)")
    click.echo(f"  board test accuracy      {pct(res.accuracy)} (twin {pct(res.twin_test['correct'] / res.twin_test['n'] if res.twin_test['n'] else None)}), "
               f"false-alarm rate {pct(res.false_alarm_rate)}, on {res.test['n']} embedded test windows")
    click.echo(f"  host Phase 3 (INT8)      accuracy {pct(host.get('int8_acc'))}, false-alarm rate "
               f"{pct(host.get('int8_far'))} on the whole test split")
    from fedtiny.trainer.rundir import device_dir

    click.echo(f"wrote {device_dir(run_dir, dev) / 'board_head.npz'}")
    if not res.max_weight_diff <= twin_tolerance:
        click.echo(f"error: the board's weights differ from the host twin's by {res.max_weight_diff:.3g} "
                   f"(over --twin-tolerance {twin_tolerance:g})", err=True)
        sys.exit(1)
