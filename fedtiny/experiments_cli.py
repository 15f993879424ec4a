"""``fedtiny compare``, ``fedtiny ablate`` and ``fedtiny report``."""
from __future__ import annotations

import platform
from dataclasses import replace
from pathlib import Path

import click

from fedtiny.errors import friendly


def _seeds(ctx, param, value):
    try:
        seeds = [int(s) for s in value.split(",") if s.strip()]
    except ValueError:
        raise click.BadParameter("give comma-separated integers, e.g. 0,1,2") from None
    if not seeds:
        raise click.BadParameter("give at least one seed")
    return seeds


def _common(fn):
    for opt in reversed([
        click.option("--dataset", default="electrical", show_default=True,
                     help="electrical | mechanical | a classData .csv | a folder of CWRU .mat files."),
        click.option("--seeds", default="0,1,2", show_default=True, callback=_seeds, help="Comma-separated seeds."),
        click.option("--devices", default=10, show_default=True, type=click.IntRange(1)),
        click.option("--rounds", default=10, show_default=True, type=click.IntRange(0)),
        click.option("--samples-per-device", default=400, show_default=True, type=click.IntRange(20)),
        click.option("--out", required=True, type=click.Path(file_okay=False, path_type=Path),
                     help="Results folder (runs/ inside it are reused when they already hold the same run)."),
    ]):
        fn = opt(fn)
    return fn


def _run(kind: str, dataset, seeds, devices, rounds, samples_per_device, out: Path) -> None:
    from fedtiny.experiments import ABLATE_VARIANTS, COMPARE_VARIANTS, run_variants, write_outputs
    from fedtiny.progress import RichReporter, console
    from fedtiny.trainer.config import TrainConfig

    variants = COMPARE_VARIANTS if kind == "compare" else ABLATE_VARIANTS
    base = TrainConfig(dataset=dataset, devices=devices, rounds=rounds, samples_per_device=samples_per_device)
    base = replace(base, method="fedmetaalign")

    def on_run(i, total, name, seed):
        console.print(f"[bold]run {i + 1}/{total}[/bold]: {name}, seed {seed}")

    res = run_variants(base, variants, seeds, out, RichReporter(), on_run)
    meta = {"command": f"fedtiny {kind} --dataset {dataset} --seeds {','.join(map(str, seeds))} "
                       f"--devices {devices} --rounds {rounds} --out {out}",
            "machine": f"{platform.machine()}, {platform.python_version()}", "config": base.to_dict()}
    title = f"{kind}: {dataset}, {devices} devices, seeds {','.join(map(str, seeds))}"
    paths = write_outputs(res, out, title, meta)
    click.echo((out / "table.md").read_text())
    click.echo("written: " + ", ".join(str(p) for p in paths.values()))


@click.command()
@_common
@friendly
def compare(dataset, seeds, devices, rounds, samples_per_device, out):
    """Fed-Meta-Align vs FedAvg / FedProx (personalized and not) vs local-only and centralized
    references, on identical splits.

    Writes OUT/table.md, OUT/results.json (every number with its run directory) and PNG plots.
    """
    _run("compare", dataset, seeds, devices, rounds, samples_per_device, out)


@click.command()
@_common
@friendly
def ablate(dataset, seeds, devices, rounds, samples_per_device, out):
    """Fed-Meta-Align ablations: without Phase 1, floor c in {0, 0.1, 0.3, 0.5}, split fractions."""
    _run("ablate", dataset, seeds, devices, rounds, samples_per_device, out)


@click.command()
@click.argument("run", type=click.Path(file_okay=False, path_type=Path))
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="HTML file [default: RUN/report.html].")
@friendly
def report(run, out):
    """Write a self-contained HTML report of one finished run."""
    from fedtiny.report import write_report

    click.echo(f"report: {write_report(run, out)}")
