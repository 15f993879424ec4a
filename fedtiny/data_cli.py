"""``fedtiny data check`` and ``fedtiny data export``: what a dataset holds, and any dataset as a
fleet folder."""
from __future__ import annotations

from pathlib import Path

import click

from fedtiny.errors import UserError, friendly
from fedtiny.options import MAX_DEVICES


@click.group()
def data() -> None:
    """Look into a dataset (check) or write one as a fleet folder (export)."""


@data.command()
@click.argument("source")
@click.option("--devices", default=10, show_default=True, type=click.IntRange(1, MAX_DEVICES),
              help="Devices to deal the source into (as `fedtiny train --dataset SOURCE --devices N`).")
@click.option("--seed", default=0, show_default=True, type=click.IntRange(0), help="Seed of the dealing.")
@click.option("--alpha", default=0.5, show_default=True, type=click.FloatRange(0, min_open=True),
              help="Dirichlet label-skew concentration of the dealing.")
@click.option("--samples-per-device", default=None, type=click.IntRange(20),
              help="Built-in data: windows per device [default: 400].")
@click.option("--public-samples", default=1200, show_default=True, type=click.IntRange(6),
              help="Built-in data: windows of the public pool.")
@click.option("--public-fraction", default=0.2, show_default=True, type=click.FloatRange(0, 1, max_open=True),
              help="Real data: share of each class's groups held out as the public pool.")
@click.option("--window-ms", default=10.0, show_default=True, type=click.FloatRange(0), help="CSV window.")
@click.option("--hop-ms", default=None, type=click.FloatRange(0, min_open=True), help="CSV hop.")
@click.option("--block-ms", default=12.5, show_default=True, type=click.FloatRange(0, min_open=True),
              help="CSV time block.")
@click.option("--guard-ms", default=0.5, show_default=True, type=click.FloatRange(0), help="CSV guard gap.")
@click.option("--group-by", default="block", show_default=True, type=click.Choice(["block", "recording"]),
              help="CWRU split unit.")
@click.option("--blocks-per-recording", default=8, show_default=True, type=click.IntRange(1),
              help="CWRU blocks per recording.")
@click.option("--min-device-samples", default=20, show_default=True, type=click.IntRange(1),
              help="Windows every device must get.")
@click.option("--out", required=True, type=click.Path(path_type=Path), help="Fleet folder to write (must not exist).")
@click.option("--public-out", type=click.Path(path_type=Path), default=None,
              help="The public pool as a one-device fleet folder (must not exist).")
@friendly
def export(source, devices, seed, alpha, samples_per_device, public_samples, public_fraction, window_ms, hop_ms,
           block_ms, guard_ms, group_by, blocks_per_recording, min_device_samples, out, public_out):
    """Write SOURCE (electrical, mechanical, a classData .csv, a CWRU folder) as a fleet folder.

    The devices are dealt exactly as `fedtiny train --dataset SOURCE` deals them and named dev00,
    dev01, ...; `fedtiny train --fleet OUT --public PUBLIC_OUT` then trains on the same windows,
    splits and numbers. Both folders appear whole or not at all.
    """
    from fedtiny.trainer.config import TrainConfig
    from fedtiny.trainer.data import BUILTIN

    if samples_per_device is not None and source not in BUILTIN:
        raise UserError("--samples-per-device applies to the built-in generators only")
    cfg = TrainConfig(dataset=source, devices=devices, seed=seed, alpha=alpha,
                      samples_per_device=samples_per_device or 400, public_samples=public_samples,
                      public_fraction=public_fraction, window_ms=window_ms, hop_ms=hop_ms, block_ms=block_ms,
                      guard_ms=guard_ms, group_by=group_by, blocks_per_recording=blocks_per_recording,
                      min_device_samples=min_device_samples)
    fleet, names = export_dataset(cfg, out, public_out)
    click.echo(f"{out}: {len(names)} devices ({names[0]}..{names[-1]}), {fleet.n_classes} classes, "
               f"{fleet.sample_rate_hz:g} Hz" + (f"; public pool: {public_out}" if public_out else ""))


def export_dataset(cfg, out: Path, public_out: Path | None):
    """Write the fleet ``cfg`` deals from ``cfg.dataset`` (devices, public pool, windowing) as the fleet
    folder ``out`` and the pool as ``public_out`` (``fleetdir.export``: both whole or neither), so that
    ``train --fleet out --public public_out`` trains on the same windows, splits and numbers.
    Returns (the Fleet, the device names)."""
    from fedtiny.trainer.data.fleetdir import export as write
    from fedtiny.trainer.dataprep import augments, load

    fleet = load(cfg)
    info = fleet.info
    hop = None
    if "hop_rows" in info:                      # the CSV loader: hop in model samples
        if info["hop_rows"] % info["decimation"]:
            raise UserError(f"--hop-ms {cfg.hop_ms} is not a whole number of {fleet.sample_rate_hz:g} Hz model "
                            "samples; the windows cannot be written as one signal")
        hop = info["hop_rows"] // info["decimation"]
    names = write(fleet, out, public_out, hop=hop, sign_symmetric=augments(cfg, fleet), source=cfg.dataset)
    return fleet, names


@data.command()
@click.argument("path")
@friendly
def check(path):
    """What PATH holds: per device its classes (duration, groups), rates, channels, value ranges;
    and its problems (a device without normal data, a class on one device, unlabelled or
    unreadable files, a rate, level or length that alone separates a class). Exit 0 with warnings,
    2 when nothing is usable."""
    from fedtiny.trainer.data.check import check_path

    lines, problems, usable = check_path(path)
    for line in lines:
        click.echo(line)
    for p in problems:
        click.echo(f"warning: {p}")
    if not usable:
        raise UserError(f"{path}: nothing usable")
