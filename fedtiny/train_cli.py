"""``fedtiny train``."""
from __future__ import annotations

import contextlib
import os
import sys
from pathlib import Path

import click

from fedtiny.errors import UserError, friendly


def _splits(ctx, param, value):
    try:
        parts = tuple(float(v) for v in value.split(","))
    except ValueError:
        raise click.BadParameter("give three comma-separated fractions, e.g. 0.2,0.5,0.3") from None
    if len(parts) != 3:
        raise click.BadParameter("give three comma-separated fractions, e.g. 0.2,0.5,0.3")
    return parts


@contextlib.contextmanager
def no_cache_env(off: bool):
    """``--no-cache``: set FEDTINY_NO_CACHE for the duration of the command (not part of the config:
    it cannot change any number), and restore the environment afterwards."""
    old = os.environ.get("FEDTINY_NO_CACHE")
    if off:
        os.environ["FEDTINY_NO_CACHE"] = "1"
    try:
        yield
    finally:
        if off:
            if old is None:
                os.environ.pop("FEDTINY_NO_CACHE", None)
            else:
                os.environ["FEDTINY_NO_CACHE"] = old


def print_summary(report: dict, out: Path) -> None:
    """The end-of-run table: one row per device, then the means."""
    from rich.console import Console
    from rich.table import Table

    t = Table(title=f"{report['method']} on {report['dataset']} (seed {report['seed']}) -> {out}")
    for col in ("device", "test n", "float acc", "INT8 acc", "threshold", "model B", "arena B"):
        t.add_column(col, justify="right")
    for d in report["devices"]:
        t.add_row(str(d["device"]), str(d["n_test"]), f"{100 * d['float_acc']:.1f}%",
                  f"{100 * d['int8_acc']:.1f}%", f"{d['threshold']:.3f}", str(d["model_bytes"]),
                  str(d["arena_bytes"]))
    s = report["summary"]
    t.add_row("mean", "", f"{100 * s['mean_float_acc']:.1f}%", f"{100 * s['mean_int8_acc']:.1f}%", "", "", "",
              style="bold")
    (Console() if sys.stdout.isatty() else Console(width=160)).print(t)


@click.command()
@click.option("--dataset", default="electrical", show_default=True,
              help="electrical | mechanical (built in), a classData-format .csv, or a folder of CWRU .mat files.")
@click.option("--devices", default=10, show_default=True, type=click.IntRange(1, 1000), help="Number of devices.")
@click.option("--method", default="fedmetaalign", show_default=True,
              type=click.Choice(["fedmetaalign", "fedavg", "fedprox", "local", "centralized"]))
@click.option("--personalize/--no-personalize", default=True, show_default=True,
              help="Phase 3 per device (frozen extractor, fine-tuned head, tuned threshold).")
@click.option("--rounds", default=10, show_default=True, type=click.IntRange(0), help="Phase-2 rounds.")
@click.option("--seed", default=0, show_default=True, type=int, help="Seed for data, splits, init and training.")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Run directory [default: runs/<dataset>-<method>-s<seed>].")
@click.option("--resume", is_flag=True, help="Continue a run that was interrupted (same options).")
@click.option("--alpha", default=0.5, show_default=True, type=float, help="Dirichlet label-skew concentration.")
@click.option("--samples-per-device", default=None, type=click.IntRange(20),
              help="Windows per device, built-in data only [default: 400]; refused on real data.")
@click.option("--skip-phase1", is_flag=True, help="Ablation: no Phase-1 tour (Fed-Meta-Align).")
@click.option("--floor", default=0.1, show_default=True, type=float, help="Similarity floor c.")
@click.option("--server-lr", default=1.0, show_default=True, type=float, help="Server step alpha.")
@click.option("--perf", default="accuracy", show_default=True, type=click.Choice(["accuracy", "loss_improvement"]),
              help="p_k: local validation accuracy, or relative loss improvement.")
@click.option("--mu", default=0.01, show_default=True, type=float, help="FedProx proximal weight.")
@click.option("--tour", default="fixed", show_default=True, type=click.Choice(["fixed", "random"]),
              help="Phase-1 device order.")
@click.option("--tours", default=1, show_default=True, type=click.IntRange(0), help="Phase-1 tours.")
@click.option("--splits", default="0.2,0.5,0.3", show_default=True, callback=_splits,
              help="Phase 1/2/3 shares of each device's non-test windows.")
@click.option("--test-fraction", default=0.2, show_default=True, type=float, help="Held-out test share per device.")
@click.option("--local-epochs", default=2, show_default=True, type=click.IntRange(1), help="Phase-2 local epochs.")
@click.option("--threshold-metric", default="balanced_accuracy", show_default=True,
              type=click.Choice(["balanced_accuracy", "accuracy", "f1"]))
@click.option("--min-device-samples", default=20, show_default=True, type=click.IntRange(1),
              help="Fewest windows a device may have.")
@click.option("--public-fraction", default=0.2, show_default=True, type=float,
              help="Real data: share of each class's groups held out as the Phase-0 public pool.")
@click.option("--window-ms", default=10.0, show_default=True, type=float,
              help="CSV: window length (multiple of 0.5 ms); 0 = per-sample input (each row a 6-value vector).")
@click.option("--hop-ms", default=None, type=float,
              help="CSV: hop between windows [default: one 2 kHz sample, 0.5 ms; per-sample: one row].")
@click.option("--block-ms", default=12.5, show_default=True, type=float,
              help="CSV: contiguous time block (the split unit) of each label run.")
@click.option("--guard-ms", default=0.5, show_default=True, type=float,
              help="CSV: gap between blocks that belongs to no block.")
@click.option("--group-by", default="block", show_default=True, type=click.Choice(["block", "recording"]),
              help="CWRU split unit: time blocks of a recording, or whole recordings (strict).")
@click.option("--blocks-per-recording", default=8, show_default=True, type=click.IntRange(1),
              help="CWRU, --group-by block: contiguous blocks per recording.")
@click.option("--negate-augment/--no-negate-augment", default=True, show_default=True,
              help="CSV: train also on each training window negated (the same fault incepted half a cycle later).")
@click.option("--no-cache", is_flag=True, help="Decode real data files again instead of using the cache.")
@friendly
def train(dataset, devices, method, personalize, rounds, seed, out, resume, alpha, samples_per_device,
          skip_phase1, floor, server_lr, perf, mu, tour, tours, splits, test_fraction, local_epochs,
          threshold_metric, min_device_samples, public_fraction, window_ms, hop_ms, block_ms, guard_ms,
          group_by, blocks_per_recording, negate_augment, no_cache):
    """Train a fleet with Fed-Meta-Align or a baseline and write a run directory.

    Fed-Meta-Align: Phase 0 pretraining on a public pool, Phase 1 serial tour, Phase 2 rounds
    weighted by local accuracy x max(cos(update, mean update), floor), Phase 3 per device (frozen
    extractor, fine-tuned head, tuned threshold) and INT8 conversion evaluated with tflite-micro.
    """
    from fedtiny.progress import RichReporter
    from fedtiny.trainer.config import TrainConfig
    from fedtiny.trainer.pipeline import train as run_train

    builtin = dataset in ("electrical", "mechanical")
    if samples_per_device is not None and not builtin:
        raise UserError("--samples-per-device applies to the built-in generators only: real data keeps every "
                        "window its file gives (set the CSV windows with --window-ms / --hop-ms)")
    cfg = TrainConfig(dataset=dataset, devices=devices, method=method, personalize=personalize,
                      rounds=rounds, seed=seed, alpha=alpha,
                      samples_per_device=400 if samples_per_device is None else samples_per_device,
                      min_device_samples=min_device_samples, public_fraction=public_fraction,
                      window_ms=window_ms, hop_ms=hop_ms, block_ms=block_ms, guard_ms=guard_ms,
                      group_by=group_by, blocks_per_recording=blocks_per_recording, negate_augment=negate_augment,
                      skip_phase1=skip_phase1, floor=floor, server_lr=server_lr, perf=perf, mu=mu,
                      tour=tour, tours=tours, splits=splits, test_fraction=test_fraction,
                      local_epochs=local_epochs, threshold_metric=threshold_metric)
    if out is None:
        name = Path(dataset).stem if dataset not in ("electrical", "mechanical") else dataset
        out = Path("runs") / f"{name}-{method}-s{seed}"
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} is a file")
    with no_cache_env(no_cache):
        report = run_train(cfg, out, resume=resume, reporter=RichReporter())
    print_summary(report, out)
    click.echo(f"run directory: {out}")
