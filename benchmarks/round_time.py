"""Time per Phase-2 round against the number of devices (built-in data).

    python benchmarks/round_time.py --dataset electrical --devices 10,50,100 --rounds 3

Runs Phase 0, Phase 1 and ``--rounds`` Phase-2 rounds of Fed-Meta-Align (stopping before Phase 3)
and prints the mean wall time of a round (local training of every device + aggregation + the
per-round evaluation) from the run's own step timings.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", default="electrical")
    ap.add_argument("--devices", default="10,50,100")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--method", default="fedmetaalign")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    from fedtiny.trainer.config import TrainConfig
    from fedtiny.trainer.pipeline import train

    print(f"command: python {' '.join(sys.argv)}")
    print(f"{'devices':>8} {'s/round':>9} {'s/device-update':>16}")
    for n in [int(v) for v in args.devices.split(",")]:
        cfg = TrainConfig(dataset=args.dataset, devices=n, rounds=args.rounds, method=args.method, seed=args.seed)
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / "r"
            train(cfg, out, until=f"round{args.rounds:02d}")
            import json
            t = json.loads((out / "state" / "progress.json").read_text())["timings"]
        rounds = [v for k, v in t.items() if k.startswith("round")]
        per = sum(rounds) / len(rounds)
        print(f"{n:>8} {per:>9.2f} {per / n:>16.3f}")


if __name__ == "__main__":
    main()
