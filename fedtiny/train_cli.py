"""``fedtiny train``."""
from __future__ import annotations

import sys
from pathlib import Path

import click

from fedtiny.errors import UserError, friendly
from fedtiny.options import (config_fields, config_options, dataset_option, devices_option, min_sites_option,
                             no_cache_env,
                             rounds_option)


def print_summary(report: dict, out: Path) -> None:
    """The end-of-run table: one row per device, then the means."""
    from rich.console import Console
    from rich.table import Table

    t = Table(title=f"{report['method']} on {report['dataset']} (seed {report['seed']}) -> {out}")

    def pct(v) -> str:
        return "n/a" if v is None else f"{100 * v:.1f}%"

    for col in ("device", "test n", "float acc", "INT8 acc", "false alarms", "detections", "threshold (from)",
                "model B", "arena used B (host)"):
        t.add_column(col, justify="right")
    for d in report["devices"]:
        t.add_row(str(d.get("name", d["device"])), str(d["n_test"]), f"{100 * d['float_acc']:.1f}%",
                  f"{100 * d['int8_acc']:.1f}%", pct(d.get("int8_far")), pct(d.get("int8_dr")),
                  f"{d['threshold']:.3f} ({d.get('threshold_origin') or 'default'})",
                  str(d.get("model_bytes", "-")), str(d.get("arena_bytes", "-")))
    s = report["summary"]
    t.add_row("mean", "", f"{100 * s['mean_float_acc']:.1f}%", f"{100 * s['mean_int8_acc']:.1f}%", "", "", "", "",
              "", style="bold")
    if s.get("fleet_int8_acc") is not None:
        t.add_row("fleet", "", "", pct(s.get("fleet_int8_acc")), pct(s.get("fleet_int8_far")),
                  pct(s.get("fleet_int8_dr")), "", "", "", style="bold")
    if report.get("faults"):
        from fedtiny.trainer.faults import fault_note

        t.caption = fault_note(report["faults"])
    (Console() if sys.stdout.isatty() else Console(width=160)).print(t)


@click.command()
@dataset_option()
@devices_option()
@rounds_option()
@click.option("--seed", default=0, show_default=True, type=click.IntRange(0),
              help="Seed for data, splits, init and training.")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Run directory [default: runs/<dataset>-<method>-s<seed>].")
@click.option("--resume", is_flag=True, help="Continue a run that was interrupted (same options).")
@click.option("--engine", type=click.Choice(["inprocess", "in-process-loop", "flower-sim"]), default="inprocess",
              show_default=True,
              help="inprocess: every site in this process, local copies trained together (vectorized); "
                   "in-process-loop: every site in this process, one after another (the per-device engine; "
                   "the numbers of earlier versions); flower-sim: the per-device engine through Flower's "
                   "simulation engine (Ray, one worker per CPU, 127.0.0.1 only), equal to in-process-loop.")
@min_sites_option()
@config_options()
@friendly
def train(out, resume, engine, min_sites, no_cache, **options):
    """Train a fleet with Fed-Meta-Align or a baseline and write a run directory.

    Fed-Meta-Align: Phase 0 pretraining on a public pool, Phase 1 serial tour, Phase 2 rounds
    weighted by local accuracy x max(cos(update, mean update), floor), Phase 3 per device (frozen
    extractor, fine-tuned head, tuned threshold) and INT8 conversion evaluated with tflite-micro.
    """
    from fedtiny.progress import RichReporter
    from fedtiny.trainer.config import TrainConfig
    from fedtiny.trainer.pipeline import train as run_train

    cfg = TrainConfig(**config_fields(options))
    if out is None:
        name = Path(cfg.dataset).stem if cfg.dataset not in ("electrical", "mechanical") else cfg.dataset
        out = Path("runs") / f"{name}-{cfg.method}-s{cfg.seed}"
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} is a file")
    with no_cache_env(no_cache):
        if engine == "flower-sim":
            from fedtiny.trainer.flower.simulation import train_sim

            report = train_sim(cfg, out, resume=resume, reporter=RichReporter(), min_sites=min_sites,
                               exit_on_interrupt=True)
        else:
            from fedtiny.trainer.pipeline import InProcess

            report = run_train(cfg, out, resume=resume, reporter=RichReporter(), min_sites=min_sites,
                               backend=InProcess(vectorized=(engine == "inprocess")))
    print_summary(report, out)
    click.echo(f"run directory: {out}")
