"""Wall time per phase of one training run (default: 10 devices, built-in data).

    python benchmarks/phase_times.py --dataset electrical --devices 10 --seed 0

Prints the figures and the command; docs/explanation/performance.md records them. Timings come from the run's own
per-step checkpoints (report.json "timings_s"), so they are what `fedtiny train` spends.
"""
from __future__ import annotations

import argparse
import platform
import sys
import tempfile
import time
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", default="electrical")
    ap.add_argument("--devices", type=int, default=10)
    ap.add_argument("--method", default="fedmetaalign")
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    from fedtiny.trainer.config import TrainConfig
    from fedtiny.trainer.pipeline import train

    cfg = TrainConfig(dataset=args.dataset, devices=args.devices, method=args.method, rounds=args.rounds,
                      seed=args.seed)
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        rep = train(cfg, Path(tmp) / "bench")
        total = time.perf_counter() - t0
    t = rep["timings_s"]
    phases = {
        "phase0": sum(v for k, v in t.items() if k == "phase0"),
        "phase1": sum(v for k, v in t.items() if k == "phase1"),
        "phase2 (all rounds)": sum(v for k, v in t.items() if k.startswith("round")),
        "phase3 + INT8 + eval (all devices)": sum(v for k, v in t.items() if k.startswith("dev")),
        "centralized": sum(v for k, v in t.items() if k == "central"),
    }
    print(f"command: python {' '.join(sys.argv)}")
    print(f"machine: {platform.processor() or platform.machine()}, python {platform.python_version()}")
    for k, v in phases.items():
        if v:
            print(f"{k:38s} {v:8.2f} s")
    print(f"{'total wall time (incl. data, TF start)':38s} {total:8.2f} s")
    print(f"mean float acc {100 * rep['summary']['mean_float_acc']:.2f} %, "
          f"mean INT8 acc {100 * rep['summary']['mean_int8_acc']:.2f} %")


if __name__ == "__main__":
    main()
