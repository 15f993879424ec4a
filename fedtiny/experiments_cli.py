"""``fedtiny compare``, ``fedtiny ablate`` and ``fedtiny report``."""
from __future__ import annotations

import platform
from pathlib import Path

import click

from fedtiny.errors import UserError, fail, friendly
from fedtiny.options import (VARIANT_FIELDS, config_fields, config_options, dataset_option, devices_option,
                             no_cache_env, rounds_option)


def _seeds(ctx, param, value):
    try:
        seeds = [int(s) for s in value.split(",") if s.strip()]
    except ValueError:
        raise click.BadParameter("give comma-separated integers, e.g. 0,1,2") from None
    if not seeds:
        raise click.BadParameter("give at least one seed")
    return seeds


def _common(fn):
    fn = config_options(exclude=VARIANT_FIELDS)(fn)
    for opt in reversed([
        dataset_option(),
        click.option("--seeds", default="0,1,2", show_default=True, callback=_seeds, help="Comma-separated seeds."),
        devices_option(),
        rounds_option(),
        click.option("--out", required=True, type=click.Path(file_okay=False, path_type=Path),
                     help="Results folder (runs/ inside it are reused when they already hold the same run; "
                          "an interrupted experiment continues where it stopped)."),
    ]):
        fn = opt(fn)
    return fn


def _run(kind: str, seeds, out: Path, options: dict, only: str | None = None) -> None:
    from fedtiny.experiments import (ABLATE_VARIANTS, COMPARE_VARIANTS, ROBUST_VARIANTS, check_experiment,
                                     experiment_options, run_variants, write_outputs)
    from fedtiny.progress import RichReporter, console
    from fedtiny.trainer.config import TrainConfig
    from fedtiny.trainer.rundir import FolderLock, atomic_write_json

    base = TrainConfig(**config_fields(options), method="fedmetaalign")
    variants = ABLATE_VARIANTS if kind == "ablate" else (
        {**COMPARE_VARIANTS, **ROBUST_VARIANTS} if base.faulty else COMPARE_VARIANTS)
    if only:
        pool = {**COMPARE_VARIANTS, **ROBUST_VARIANTS} if kind == "compare" else ABLATE_VARIANTS
        names = [n.strip() for n in only.split(",") if n.strip()]
        unknown = [n for n in names if n not in pool]
        if unknown or not names:
            raise UserError(f"unknown variant(s) {', '.join(unknown) or '(none given)'}; choose from "
                            f"{', '.join(pool)}")
        variants = {n: pool[n] for n in names}

    def on_run(i, total, name, seed):
        console.print(f"[bold]run {i + 1}/{total}[/bold]: {name}, seed {seed}")

    def on_fail(name, seed, message):
        console.print(f"[red]failed[/red]: {name}, seed {seed}: {message}")

    record = experiment_options(kind, base, seeds, variants)
    check_experiment(out, record)                 # before any run: refuse another experiment's OUT
    with FolderLock(out):                         # one process writes OUT at a time
        check_experiment(out, record)
        atomic_write_json(out / "experiment.json", record)
        res = run_variants(base, variants, seeds, out, RichReporter(), on_run, on_fail)
        derived = FLEET_DERIVED if options.get("fleet") else ()     # what --fleet resolves from the folder
        given = " ".join(_flag(k, v) for k, v in config_fields(options).items()
                         if v != getattr(TrainConfig(), k) and k not in derived)
        if options.get("fleet"):
            given = f"--fleet {options['fleet']} {given}"
        given += f" --variants {','.join(variants)}" if only else ""
        meta = {"command": " ".join(f"fedtiny {kind} --seeds {','.join(map(str, seeds))} {given} "
                                    f"--out {out}".split()),
                "options": record, "machine": f"{platform.machine()}, {platform.python_version()}",
                "config": base.to_dict()}
        from fedtiny.trainer.rundir import dataset_label

        what = dataset_label(base) if base.public else f"{base.dataset}, {base.devices} devices"
        title = f"{kind}: {what}, seeds {','.join(map(str, seeds))}"
        if not res["variants"]:
            fail(f"all {len(variants) * len(seeds)} runs failed (errors above); nothing was written, "
                 f"earlier results in {out} are kept", 1)
        paths = write_outputs(res, out, title, meta)
    click.echo((out / "table.md").read_text())
    click.echo("written: " + ", ".join(str(p) for p in paths.values()))
    if res["failed"]:
        fail(f"{len(res['failed'])} of {len(variants) * len(seeds)} runs failed (listed in {paths['table']}); "
             "the others are in the table", 1)


FLEET_DERIVED = ("dataset", "devices", "device_names", "class_names", "rate_hz", "channel_scale", "channel_units",
                 "sign_symmetric", "window_ms", "hop_ms", "block_ms", "guard_ms")


def _flag(name: str, value) -> str:
    opt = "--" + name.replace("_", "-")
    if isinstance(value, bool):
        return opt if value else f"--no-{name.replace('_', '-')}" if name == "personalize" else ""
    if isinstance(value, (tuple, list)):
        return f"{opt} {','.join(str(v) for v in value)}"
    return f"{opt} {value}"


@click.command()
@_common
@click.option("--variants", "only", default=None,
              help="Comma-separated subset of the variants to run (default: all; with --faulty the robust "
                   "median+p and trimmed-mean+p join them).")
@friendly
def compare(seeds, out, no_cache, only, **options):
    """Fed-Meta-Align vs FedAvg / FedProx (personalized and not) vs local-only and centralized
    references, on identical splits.

    Takes every data and method option of ``fedtiny train`` (the same for every variant). Writes
    OUT/table.md, OUT/results.json (every number with its run directory) and PNG plots. A run that
    fails is listed with its error and the others still run (exit 1 when any failed).
    """
    with no_cache_env(no_cache):
        _run("compare", seeds, out, options, only)


@click.command()
@_common
@friendly
def ablate(seeds, out, no_cache, **options):
    """Fed-Meta-Align ablations: without Phase 1, floor c in {0, 0.1, 0.3, 0.5}, split fractions.

    Takes every data and method option of ``fedtiny train``; a variant overrides only what it
    ablates. A run that fails is listed with its error and the others still run (exit 1).
    """
    with no_cache_env(no_cache):
        _run("ablate", seeds, out, options)


@click.command()
@click.argument("run", type=click.Path(file_okay=False, path_type=Path))
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="HTML file [default: RUN/report.html].")
@friendly
def report(run, out):
    """Write a self-contained HTML report of one finished run."""
    from fedtiny.report import write_report

    click.echo(f"report: {write_report(run, out)}")
