"""The ``fedtiny`` command line: train, build, flash, bench, emulate, compare, ablate, report, demo.

Subcommands load lazily so that ``fedtiny --help`` answers without importing TensorFlow.
"""
from __future__ import annotations

import importlib
import os

import click

# TensorFlow's C++ start-up chatter (oneDNN notes, absl preamble) would bury the progress bars and
# the one-line errors; real failures still surface as Python exceptions.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

LAZY = {
    "train": ("fedtiny.train_cli", "train"),
    "build": ("fedtiny.codegen.cli", "build"),
    "flash": ("fedtiny.codegen.cli", "flash"),
    "bench": ("fedtiny.bench.cli", "bench"),
    "emulate": ("fedtiny.bench.cli", "emulate"),
    "compare": ("fedtiny.experiments_cli", "compare"),
    "ablate": ("fedtiny.experiments_cli", "ablate"),
    "report": ("fedtiny.experiments_cli", "report"),
    "demo": ("fedtiny.demo", "demo"),
}
SHORT_HELP = {
    "train": "Train a fleet (Fed-Meta-Align, FedAvg, FedProx, references) into a run directory.",
    "build": "Generate the TFLM PlatformIO firmware project of one device.",
    "flash": "Upload a device's firmware project with PlatformIO.",
    "bench": "Benchmark one board, several, or an emulated one over serial.",
    "emulate": "Serve a device's model over a pseudo-terminal (protocol v1).",
    "compare": "Fed-Meta-Align vs baselines over seeds: table, JSON and plots.",
    "ablate": "Fed-Meta-Align ablations (Phase 1, floor c, splits): table, JSON and plots.",
    "report": "Write a self-contained HTML report of one run.",
    "demo": "Train, build, emulate and bench on the built-in data, end to end.",
}


class LazyGroup(click.Group):
    def list_commands(self, ctx):
        return list(LAZY)

    def get_command(self, ctx, name):
        if name not in LAZY:
            return None
        mod, attr = LAZY[name]
        return getattr(importlib.import_module(mod), attr)

    def format_commands(self, ctx, formatter):
        with formatter.section("Commands"):
            formatter.write_dl([(n, SHORT_HELP[n]) for n in LAZY])


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="fedtiny")
def main() -> None:
    """fedtiny: federated TinyML fault classification, from training to firmware to bench."""
