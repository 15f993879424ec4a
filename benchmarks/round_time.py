"""Time per Phase-2 round against the number of devices, in-process (vectorized) and, when flwr
is installed, through Flower's simulation engine on the same fleet, in one run.

    python benchmarks/round_time.py --dataset electrical --devices 10,100,1000 --rounds 3

Each (engine, fleet size) runs in a fresh child process: Phase 0 and ``--rounds`` Phase-2 rounds
of Fed-Meta-Align (``skip_phase1``: the serial tour is not what is measured; stopping before
Phase 3), timed from the run's own step timings. ``round_s`` is the mean of the warm rounds
(round 2 on; round 1 includes tracing and, for Flower, the sites' start-up), ``first_round_s``
the first; ``samples_per_s`` = local training windows of a round (sum of n_k times local epochs)
/ round_s; ``peak_rss_mb`` the child's peak resident memory (for Flower the server process only;
its Ray workers are not counted). One line per count:

    devices=N round_s=X first_round_s=X samples_per_s=Y peak_rss_mb=Z [flower_round_s=F flower_first_round_s=F flower_peak_rss_mb=M ratio=F/X]

``--engines inprocess,in-process-loop,flower-sim`` chooses what runs (default: inprocess, and
flower-sim when flwr and ray import). ``--flower-max N`` skips Flower above N devices.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from fedtiny.trainer.rundir import dumps_strict


def one(args) -> None:
    """Child: run one (engine, devices) measurement, print a JSON line."""
    from fedtiny.trainer.config import TrainConfig

    cfg = TrainConfig(dataset=args.dataset, devices=args.one, rounds=args.rounds, method=args.method,
                      seed=args.seed, skip_phase1=True)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "r"
        t0 = time.perf_counter()
        if args.engine == "flower-sim":
            from fedtiny.trainer.flower.simulation import train_sim

            train_sim(cfg, out, until=f"round{args.rounds:02d}")
        else:
            from fedtiny.trainer.pipeline import InProcess, train

            train(cfg, out, until=f"round{args.rounds:02d}", backend=InProcess(args.engine == "inprocess"))
        total = time.perf_counter() - t0
        t = json.loads((out / "state" / "progress.json").read_text())["timings"]
        lines = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    rounds = [t[f"round{r:02d}"] for r in range(1, args.rounds + 1)]
    warm = rounds[1:] or rounds
    n = [sum(m["n_samples"]) for m in lines if m.get("phase") == "phase2"]
    round_s = sum(warm) / len(warm)
    print(dumps_strict({"round_s": round_s, "first_round_s": rounds[0], "total_s": total,
                      "samples_per_s": n[-1] * cfg.local_epochs / round_s,
                      "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))


def measure(engine: str, n: int, args) -> dict | None:
    cmd = [sys.executable, __file__, "--one", str(n), "--engine", engine, "--dataset", args.dataset,
           "--rounds", str(args.rounds), "--method", args.method, "--seed", str(args.seed)]
    p = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    for line in reversed(p.stdout.splitlines()):
        if line.startswith("{"):
            return json.loads(line)
    print(f"# {engine} devices={n} failed (exit {p.returncode}): {p.stderr.strip().splitlines()[-1:]}", flush=True)
    return None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", default="electrical")
    ap.add_argument("--devices", default="10,100,1000")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--method", default="fedmetaalign")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--engines", default=None)
    ap.add_argument("--flower-max", type=int, default=10 ** 9)
    ap.add_argument("--one", type=int, default=None, help=argparse.SUPPRESS)
    ap.add_argument("--engine", default="inprocess", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one is not None:
        return one(args)
    flower = all(importlib.util.find_spec(m) is not None for m in ("flwr", "ray"))
    engines = args.engines.split(",") if args.engines else ["inprocess"] + (["flower-sim"] if flower else [])
    main_engine = engines[0]
    print(f"command: python {' '.join(sys.argv)}", flush=True)
    print(f"machine: {os.cpu_count()} cores; engines: {', '.join(engines)}", flush=True)
    for n in [int(v) for v in args.devices.split(",")]:
        parts = [f"devices={n}"]
        base = measure(main_engine, n, args)
        if base:
            parts += [f"round_s={base['round_s']:.2f}", f"first_round_s={base['first_round_s']:.2f}",
                      f"samples_per_s={base['samples_per_s']:.0f}", f"peak_rss_mb={base['peak_rss_mb']:.0f}"]
        for eng in engines[1:]:
            if eng == "flower-sim" and n > args.flower_max:
                parts.append("flower_round_s=skipped")
                continue
            r = measure(eng, n, args)
            tag = "flower" if eng == "flower-sim" else eng.replace("-", "_")
            if r:
                parts += [f"{tag}_round_s={r['round_s']:.2f}", f"{tag}_first_round_s={r['first_round_s']:.2f}",
                          f"{tag}_peak_rss_mb={r['peak_rss_mb']:.0f}"]
                if base:
                    parts.append(f"ratio{'' if tag == 'flower' else '_' + tag}={r['round_s'] / base['round_s']:.1f}")
        print(" ".join(parts), flush=True)


if __name__ == "__main__":
    main()
