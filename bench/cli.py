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
def emulate(run, device, n_test, board, link, corrupt, drop, stall, stall_after, disconnect_after,
            reenumerate, seed, score_offset):
    """Serve a device's model over a pseudo-terminal (protocol v2, latency clock=host).

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
        main_emulate(run_dir, device, link=link, echo=lambda s: click.echo(s, nl=True),
                     corrupt=corrupt, drop=drop, stall=stall, stall_after=stall_after,
                     disconnect_after=disconnect_after, seed=seed, n_test=n_test, board=board,
                     reenumerate=reenumerate, score_offset=score_offset)
    except BenchError as e:
        _fail(str(e))
