"""Does Fed-Meta-Align's Phase-2 global model oscillate, and which aggregation option stops it?

For each fleet, seed and option it trains (or reuses) a default Fed-Meta-Align run and prints, from
its metrics.jsonl: the largest round-to-round swing of the global Phase-2 validation accuracy after
round 3 (points), how many of those consecutive differences alternate in sign (a period-2
oscillation alternates every time), and the run's mean INT8 test accuracy. Every number traces to
the run directory under --out.

    python benchmarks/oscillation.py --datasets electrical,mechanical --seeds 0,1,2 --out results/oscillation

``--datasets`` also takes ``classdata`` and ``cwru``: files in the public forms written from the
built-in physics by ``tests/realdata.py`` into ``--out``/files (a ``classData.csv``, and a CWRU tree
of 2 s recordings, as docs/reference/real-data.md), or any dataset path
``fedtiny train`` takes. ``--devices`` per dataset, e.g. ``classdata=3`` (default 10). For each dataset it also draws
``--out``/DATASET-weights.png: the aggregation weights per device and round and the global Phase-2
accuracy of the first seed's run, for the first and the last option (before / after).
"""
from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np

# every option set starts from the paper's rule (not from the defaults, which are the last set)
PAPER = {"align_ref": "mean", "weight_smoothing": 0.0, "server_momentum": 0.0}
OPTIONS = {name: {**PAPER, **over} for name, over in {
    "paper (mean)": {},
    "normalized": {"align_ref": "normalized"},
    "server ref": {"align_ref": "server"},
    "momentum 0.5": {"server_momentum": 0.5},
    "smoothing 0.5": {"weight_smoothing": 0.5},
    "smoothing 0.8": {"weight_smoothing": 0.8},
    "smoothing 0.9": {"weight_smoothing": 0.9},
    "floor 0.5": {"floor": 0.5},
    "smoothing 0.8 + normalized": {"weight_smoothing": 0.8, "align_ref": "normalized"},   # the default
}.items()}


def swing_stats(accs: list[float], after: int = 3) -> tuple[float, int, int]:
    """(largest |acc_r - acc_{r-1}| for r > after, in points; sign alternations; differences)."""
    a = np.asarray(accs, dtype=np.float64) * 100
    diffs = np.diff(a)[after - 1:] if len(a) > after else np.zeros(0)
    alt = int(np.sum(np.sign(diffs[1:]) * np.sign(diffs[:-1]) < 0)) if len(diffs) > 1 else 0
    return (float(np.max(np.abs(diffs))) if len(diffs) else 0.0), alt, max(len(diffs) - 1, 0)


def public_file(name: str, out: Path) -> str:
    """``classdata`` / ``cwru``: write (once) the public-form file(s) under ``out``/files and return
    the dataset path; anything else is returned as it is."""
    import sys

    if name not in ("classdata", "cwru"):
        return name
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    import realdata

    files = out / "files"
    files.mkdir(parents=True, exist_ok=True)
    if name == "classdata":
        path = files / "classData.csv"
        if not path.exists():
            realdata.write_class_data(path, seed=0)
        return str(path)
    path = files / "CWRU"
    if not path.exists():
        realdata.write_cwru_tree(path, seconds=2.0, seed=0)
    return str(path)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--datasets", default="electrical,mechanical")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--options", default=",".join(OPTIONS))
    ap.add_argument("--out", type=Path, default=Path("results/oscillation"))
    ap.add_argument("--devices", default="", help="per dataset, e.g. classdata=3,cwru=10 (default 10)")
    args = ap.parse_args()
    devices = {k: int(v) for k, v in (x.split("=") for x in args.devices.split(",") if x)}

    from fedtiny.trainer.config import TrainConfig
    from fedtiny.trainer.pipeline import load_or_train

    t0 = time.time()
    print(f"machine: {platform.machine()}, Python {platform.python_version()}")
    print("dataset | option | seed | max swing after r3 (pp) | alternations | mean INT8 %")
    from fedtiny.plots import read_metrics, weights_before_after_plot

    names = args.options.split(",")
    for ds in args.datasets.split(","):
        first_runs = {}
        for name in names:
            over = OPTIONS[name]
            rows = []
            for seed in [int(s) for s in args.seeds.split(",")]:
                cfg = TrainConfig(dataset=public_file(ds, args.out), devices=devices.get(ds, 10), seed=seed, **over)
                rdir = args.out / ds / f"{name.replace(' ', '_').replace('(', '').replace(')', '')}-s{seed}"
                rep = load_or_train(cfg, rdir)
                first_runs.setdefault(name, rdir)
                lines = [json.loads(x) for x in (rdir / "metrics.jsonl").read_text().splitlines()]
                accs = [x["global_val_acc"] for x in lines if x.get("phase") == "phase2"]
                sw, alt, n = swing_stats(accs)
                rows.append((sw, alt, n, rep["summary"]["mean_int8_acc"]))
                print(f"{ds} | {name} | {seed} | {sw:.2f} | {alt}/{n} | {100 * rep['summary']['mean_int8_acc']:.2f}",
                      flush=True)
            sw = [r[0] for r in rows]
            acc = [100 * r[3] for r in rows]
            print(f"{ds} | {name} | mean | {np.mean(sw):.2f} (max {np.max(sw):.2f}) | "
                  f"{sum(r[1] for r in rows)}/{sum(r[2] for r in rows)} | {np.mean(acc):.2f} ± "
                  f"{np.std(acc, ddof=1) if len(acc) > 1 else float('nan'):.2f}", flush=True)
        picked = {n: read_metrics(first_runs[n]) for n in dict.fromkeys([names[0], names[-1]])}
        png = weights_before_after_plot(picked, args.out / f"{ds}-weights.png")
        if png:
            print(f"{ds}: weights before / after: {png}")
    print(f"wall time {time.time() - t0:.0f} s")


if __name__ == "__main__":
    main()
