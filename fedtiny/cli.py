"""The ``fedtiny`` command line: train, build, flash, bench, emulate, monitor, capture, personalize,
compare, ablate, report, demo, server, site, data.

Subcommands load lazily so that ``fedtiny --help`` answers without importing TensorFlow.
"""
from __future__ import annotations

import importlib
import os

import click

from .docs_pages import docs_line, page_for, with_docs_line

# TensorFlow's C++ start-up chatter (oneDNN notes, absl preamble) would bury the progress bars and
# the one-line errors; real failures still surface as Python exceptions.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
# No usage events to telemetry.flower.ai from any Flower process a command starts
# (see trainer/flower/__init__.py); set before anything imports flwr.
os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")

LAZY = {
    "train": ("fedtiny.train_cli", "train"),
    "build": ("fedtiny.codegen.cli", "build"),
    "flash": ("fedtiny.codegen.cli", "flash"),
    "bench": ("fedtiny.bench.cli", "bench"),
    "emulate": ("fedtiny.bench.cli", "emulate"),
    "monitor": ("fedtiny.bench.cli", "monitor"),
    "capture": ("fedtiny.bench.cli", "capture"),
    "personalize": ("fedtiny.bench.cli", "personalize"),
    "compare": ("fedtiny.experiments_cli", "compare"),
    "ablate": ("fedtiny.experiments_cli", "ablate"),
    "report": ("fedtiny.experiments_cli", "report"),
    "demo": ("fedtiny.demo", "demo"),
    "server": ("fedtiny.flower_cli", "server"),
    "site": ("fedtiny.flower_cli", "site"),
    "data": ("fedtiny.data_cli", "data"),
}
SHORT_HELP = {
    "train": "Train a fleet (Fed-Meta-Align, FedAvg, FedProx, references) into a run directory.",
    "build": "Generate one device's firmware: compiled C (also qemu-m4) or a TFLM PlatformIO sketch.",
    "flash": "Upload a device's firmware with PlatformIO, or run it on QEMU (qemu-m4).",
    "bench": "Benchmark one board, several, or an emulated one over serial.",
    "emulate": "Serve a device's model over a pseudo-terminal (protocol v3).",
    "monitor": "Watch a board with sensor input classify live: events, dropped samples, latency.",
    "capture": "Record labelled sensor data from a board into a fleet folder.",
    "personalize": "Phase 3 on a board: train its float32 head there, compare with the host twin.",
    "compare": "Fed-Meta-Align vs baselines over seeds: table, JSON and plots.",
    "ablate": "Fed-Meta-Align ablations (Phase 1, floor c, splits): table, JSON and plots.",
    "report": "Write a self-contained HTML report of one run.",
    "demo": "Train, build, emulate and bench on the built-in data, end to end.",
    "server": "Run a federation's server over Flower: the same run directory as train.",
    "site": "Serve one device's data to a federation (a Flower SuperNode + the site worker).",
    "data": "Check a dataset (data check) or write one as a fleet folder (data export).",
}


# click >= 8.2 raises this (a UsageError whose message is the whole help) for a group given no
# arguments; older click prints the help itself
NO_ARGS_IS_HELP = getattr(click.exceptions, "NoArgsIsHelpError", ())


class LazyGroup(click.Group):
    """Subcommands imported on demand; usage errors (unknown option, value out of range) end, like
    every other user error, with one ``error: ...`` line and exit code 2."""

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode, **extra)
        try:
            return super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except click.exceptions.Abort:
            click.echo("error: interrupted", err=True)
            raise SystemExit(130) from None
        except NO_ARGS_IS_HELP as e:      # bare `fedtiny`: the help, as --help prints it
            click.echo(e.ctx.get_help() if e.ctx is not None else e.format_message())
            raise SystemExit(0) from None
        except click.UsageError as e:
            where = e.ctx.command_path if e.ctx is not None else "fedtiny"
            msg = " ".join(e.format_message().split())
            click.echo(f"error: {msg} (see '{where} --help')", err=True)
            raise SystemExit(2) from None
        except click.ClickException as e:
            click.echo(f"error: {' '.join(e.format_message().split())}", err=True)
            raise SystemExit(e.exit_code) from None

    def list_commands(self, ctx):
        return list(LAZY)

    def get_command(self, ctx, name):
        if name not in LAZY:
            return None
        mod, attr = LAZY[name]
        return with_docs_line(getattr(importlib.import_module(mod), attr), name)

    def format_commands(self, ctx, formatter):
        with formatter.section("Commands"):
            formatter.write_dl([(n, SHORT_HELP[n]) for n in LAZY])


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]},
             epilog=docs_line(page_for("")))
@click.version_option(package_name="fedtiny")
@click.option("--verbose", is_flag=True, help="Show TensorFlow's own start-up and log messages.")
def main(verbose: bool) -> None:
    """fedtiny: federated TinyML fault classification, from training to firmware to bench."""
    if verbose:
        os.environ["FEDTINY_VERBOSE"] = "1"
        os.environ["TF_CPP_MIN_LOG_LEVEL"] = "0"


def run() -> None:
    """Console entry point: Ctrl-C and SIGTERM stop any command cleanly (finished steps are kept;
    a run continues with --resume, an experiment with the same command). SIGINT is re-armed even
    when the shell that started fedtiny in the background set it to be ignored."""
    import signal

    def stop(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, stop)
    main()
