"""``fedtiny demo``: the whole pipeline on the built-in data, end to end.

1. export the built-in fleet as a fleet folder (``OUT/data/.../fleet`` and its public pool
   ``.../public``, as ``fedtiny data export`` writes them) and train on it as ``train --fleet
   --public`` does (Fed-Meta-Align, all four phases) into ``OUT`` (reused / resumed when ``OUT``
   already holds the same run, so an interrupted demo loses no work);
2. generate the TFLM PlatformIO firmware project of every device (``OUT/firmware/devNN-BOARD``);
3. serve one device through the emulator on a real pseudo-terminal and bench it over pyserial with
   the same host code a board gets (``OUT/bench``), streaming a few extra windows with ``infer``;
4. print one summary: per-device float / INT8 accuracy, model / arena bytes and flash margin, the
   bench's accuracy and host latency, and where every artifact lies.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass, replace
from pathlib import Path

import click

from fedtiny.errors import UserError, friendly
from fedtiny.options import devices_option, rounds_option


@dataclass
class DemoResult:
    run_dir: Path
    report: dict
    builds: list          # fedtiny.codegen.build.BuildResult, one per device
    bench: object         # fedtiny.bench.BenchResult of the emulated device
    bench_files: list[Path]


# what the exported data depends on (the training options do not change it)
DATA_FIELDS = ("dataset", "devices", "seed", "alpha", "samples_per_device", "public_samples", "public_fraction",
               "window_ms", "hop_ms", "block_ms", "guard_ms", "group_by", "blocks_per_recording",
               "min_device_samples")


def fleet_config(cfg, data_root: Path):
    """The demo's data as a user's: the built-in fleet of ``cfg`` exported by ``fedtiny data export``'s
    code (``data_cli.export_dataset``) into ``data_root/<dataset>-<N>dev-s<seed>-<hash>/{fleet,public}``
    (the hash is of ``DATA_FIELDS``: another deal gets another folder; an existing export is
    reused, so a resumed demo does not write it again), and the TrainConfig of
    ``train --fleet fleet --public public`` with ``cfg``'s training options. The export reads back
    the same windows, labels and group order, so this run's numbers are ``cfg``'s."""
    import hashlib
    import json
    import shutil
    from dataclasses import fields

    from fedtiny.data_cli import export_dataset
    from fedtiny.trainer.config import TrainConfig
    from fedtiny.trainer.data.fleetdir import run_fields

    d = cfg.to_dict()
    key = hashlib.sha256(json.dumps({k: d[k] for k in DATA_FIELDS}, sort_keys=True).encode()).hexdigest()[:8]
    root = Path(data_root) / f"{cfg.dataset}-{cfg.devices}dev-s{cfg.seed}-{key}"
    fleet, pool = root / "fleet", root / "public"
    if not pool.is_dir():                     # export writes fleet then pool: no pool, no whole export
        if fleet.exists():
            shutil.rmtree(fleet)
        export_dataset(cfg, fleet, pool)
    defaults = {f.name: f.default for f in fields(TrainConfig) if f.name in ("samples_per_device",)}
    return replace(cfg, **defaults, **run_fields(str(pool), fleet, seed=cfg.seed, alpha=cfg.alpha),
                   public=str(pool))


def run_demo(cfg, out: Path, board: str, bench_device_id: int, stream: int = 8,
             reporter=None) -> DemoResult:
    """Train (or reuse) ``cfg`` into ``out``, build every device for ``board``, bench
    ``bench_device_id`` through the emulator serving exactly what its firmware embeds."""
    from fedtiny.bench import bench_emulated
    from fedtiny.codegen.build import build_project
    from fedtiny.trainer.pipeline import Reporter, load_or_train

    rep = reporter or Reporter()
    report = load_or_train(cfg, out, rep)
    builds = []
    rep.start(f"Firmware projects ({board})", cfg.devices)
    for d in range(cfg.devices):
        builds.append(build_project(out, d, board=board, compile=False))
        rep.advance()
    rep.finish()
    b = builds[bench_device_id]
    rep.start(f"Bench device {bench_device_id} (emulator, {b.test_samples} windows)", b.test_samples + stream)
    res, files = bench_emulated(out, bench_device_id, stream=stream, n_test=b.test_samples,
                                progress=_Counter(rep))
    rep.finish()
    return DemoResult(out, report, builds, res, files)


class _Counter:
    """Turns bench progress callbacks (stage, done, total) into reporter advances."""

    def __init__(self, rep) -> None:
        self.rep = rep
        self.seen: dict[str, int] = {}

    def __call__(self, stage: str, done: int, total: int) -> None:
        if stage not in ("run", "stream"):
            return
        step = done - self.seen.get(stage, 0)
        if step > 0:
            self.rep.advance(step)
            self.seen[stage] = done


def summary_table(result: DemoResult):
    """One rich table: a row per device (accuracies, threshold, bytes, fit margins), then the means."""
    from rich import box
    from rich.table import Table

    builds = {b.device: b for b in result.builds}
    # fits an 80-column terminal: headers on up to three lines, no vertical rules, and cells fold
    # rather than end in "..." when a terminal is narrower still (a number is never cut)
    t = Table(title=f"fedtiny demo: {result.report['method']} on {result.report['dataset']}, "
                    f"seed {result.report['seed']}", box=box.SIMPLE_HEAD, pad_edge=False, padding=(0, 1), collapse_padding=True)
    for col in ("device", "test\nn", "float\nacc", "INT8\nacc", "thres-\nhold", "model\nB",
                "arena\nused B\n(host)", "arena\nalloc-\nated B", "flash\nmargin\nB", "RAM\nmargin\nB"):
        t.add_column(col, justify="right", overflow="fold")
    for d in result.report["devices"]:
        b = builds[d["device"]]
        t.add_row(str(d["device"]), str(d["n_test"]), f"{100 * d['float_acc']:.1f}%",
                  f"{100 * d['int8_acc']:.1f}%", f"{d['threshold']:.3f}", str(d["model_bytes"]),
                  str(d["arena_bytes"]), str(b.arena_bytes), str(b.flash_budget - b.flash_used),
                  str(b.ram_budget - b.ram_used))
    s = result.report["summary"]
    t.add_row("mean", "", f"{100 * s['mean_float_acc']:.1f}%", f"{100 * s['mean_int8_acc']:.1f}%",
              "", "", "", "", "", "", style="bold")
    return t


def bench_lines(result: DemoResult) -> list[str]:
    r = result.bench
    lat = r.latency_us
    lines = [
        f"bench of device {r.device_id} through the emulator ({r.port}): accuracy {100 * r.accuracy:.1f}% "
        f"on {r.n} embedded windows, run's INT8 accuracy on the same windows "
        f"{100 * (r.expected_accuracy or 0):.1f}%, decision mismatches {len(r.decision_mismatches)}, "
        f"borderline {len(r.borderline)} (within {r.tolerance_lsb} LSB of the host's scores)",
        f"latency per inference (clock={r.clock}: host time of the TFLM interpreter, not a board): "
        f"p50 {lat['p50']} us, p95 {lat['p95']} us, max {lat['max']} us",
    ]
    if r.stream:
        lines.append(f"streamed {r.stream['n']} windows with 'infer': accuracy {100 * r.stream['accuracy']:.1f}%, "
                     f"decision mismatches {len(r.stream['decision_mismatches'])}, "
                     f"borderline {len(r.stream.get('borderline', []))}")
    return lines


@click.command()
@click.option("--dataset", default="electrical", show_default=True,
              type=click.Choice(["electrical", "mechanical"]), help="Built-in fleet data.")
@devices_option()
@rounds_option()
@click.option("--seed", default=0, show_default=True, type=click.IntRange(0), help="Seed of the whole pipeline.")
@click.option("--board", default="nano33ble", show_default=True,
              help="Board the firmware projects are generated for (a name under boards/).")
@click.option("--bench-device", default=3, show_default=True, type=click.IntRange(0),
              help="Device served through the emulator and benchmarked.")
@click.option("--stream", default=8, show_default=True, type=click.IntRange(0),
              help="Extra test windows streamed to the emulated device with 'infer'.")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Run directory [default: runs/demo-<dataset>-s<seed>]; an existing one with the same "
                   "options is reused (an interrupted demo resumes).")
@friendly
def demo(dataset, devices, rounds, seed, board, bench_device, stream, out):
    """Train, build, emulate and bench on the built-in data, end to end.

    Trains a fleet with Fed-Meta-Align, generates every device's TFLM firmware project, serves one
    device through the emulator on a pseudo-terminal, benchmarks it over serial and prints one
    summary with where every artifact lies.
    """
    from rich.console import Console

    from fedtiny.codegen.boards import load_board
    from fedtiny.progress import RichReporter, console, print_line
    from fedtiny.trainer.config import TrainConfig

    load_board(board)                      # an unknown board fails now, not after training
    if not 0 <= bench_device < devices:
        raise UserError(f"--bench-device {bench_device} is not one of the {devices} devices (0..{devices - 1})")
    cfg = replace(TrainConfig(), dataset=dataset, devices=devices, rounds=rounds, seed=seed)
    out = out or Path("runs") / f"demo-{dataset}-s{seed}"
    cfg = fleet_config(cfg, out / "data")     # the fleet-folder path users take (fedtiny data export)
    result = run_demo(cfg, out, board, bench_device, stream, RichReporter())
    con = Console() if sys.stdout.isatty() else Console(width=160)   # no truncated columns in logs
    con.print(summary_table(result))
    b = result.builds[bench_device]
    for line in bench_lines(result) + [
            f"fleet folder:        {cfg.dataset}  (public pool {cfg.public}; as `fedtiny data export` writes them)",
            f"run directory:       {out}  (config.json, metrics.jsonl, report.json, devices/devNN/)",
            f"firmware projects:   {b.project_dir.parent}/devNN-{b.board}/",
            f"                     {b.compile_hint}",
            "bench results:       " + ", ".join(str(p) for p in result.bench_files),
            "next: fedtiny report " + str(out) + "   |   with a board: fedtiny flash --device N "
            f"--board {b.board} --run {out}, then fedtiny bench --port PORT --run {out}"]:
        print_line(con, line)
    if not result.bench.ok:
        console.print("[red]the emulated device's decisions differ from the run's INT8 decisions[/red]")
        raise SystemExit(1)
