"""One Phase-2 round on each backend, in one run: in-process, Flower simulation (Ray) and a
loopback Flower deployment (a SuperLink, 3 ``fedtiny site`` processes, ``fedtiny server``).

    python benchmarks/federation_round.py --devices 3 --rounds 2

Every backend runs the same Fed-Meta-Align run (same seed, built-in electrical fleet; Phase 0 and
Phase 3 shortened, which does not touch a round) and the round figures are the run's own step
timings (``state/progress.json``: the round's local training on every site, aggregation, and every
site's evaluation of the new model, with the messages and process starts that takes). Round 1 is
the first Phase-2 round (in deployment it already follows the Phase-1 tour, so every site's TF
engine is warm); the last round is the steady state. Ratios are to the in-process engine's round.
The script also checks that the three runs' reports agree.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from fedtiny.trainer.rundir import dumps_strict


def timings(run: Path) -> dict:
    return json.loads((run / "state" / "progress.json").read_text())["timings"]


def report(run: Path) -> dict:
    r = json.loads((run / "report.json").read_text())
    r.pop("timings_s")
    r.pop("run")
    return r


def deployment(cfg, root: Path) -> Path:
    """A SuperLink, one ``fedtiny site`` per device and ``fedtiny server`` on 127.0.0.1."""
    from fedtiny.trainer.flower import processes as fp

    fedtiny = [sys.executable, "-c", "from fedtiny.cli import run; run()"]
    procs = []
    try:
        port = fp.free_port()
        link = fp.start(fp.superlink_cmd("127.0.0.1", port, root / "link.db"), root / "superlink.log",
                        fp.child_env(FLWR_HOME=root / "link-home"))
        procs.append(link)
        fp.wait_port("127.0.0.1", port, 120, link, "flower-superlink", root / "superlink.log")
        for k in range(cfg.devices):
            q = fp.free_port()
            p = fp.start(fedtiny + ["site", "--builtin", f"{cfg.dataset}:{k}", "--server", f"127.0.0.1:{port}",
                                    "--insecure", "--work", str(root / f"site{k}"), "--port", str(q)],
                         root / f"site{k}.log")
            procs.append(p)
            fp.wait_port("127.0.0.1", q, 180, p, f"site {k}", root / f"site{k}.log")
        (root / "cfg.json").write_text(dumps_strict(cfg.to_dict()))
        out = root / "run"
        srv = subprocess.run(fedtiny + ["server", "--superlink", f"127.0.0.1:{port}", "--insecure",
                                        "--config", str(root / "cfg.json"), "--out", str(out), "--wait", "300"],
                             capture_output=True, text=True, timeout=1800)
        if srv.returncode != 0:
            raise SystemExit(f"fedtiny server failed:\n{srv.stdout[-2000:]}\n{srv.stderr[-2000:]}")
        return out
    finally:
        for p in reversed(procs):
            fp.stop(p)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--devices", type=int, default=3)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--local-epochs", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    from fedtiny.trainer.config import TrainConfig
    from fedtiny.trainer.flower.simulation import train_sim
    from fedtiny.trainer.pipeline import train

    cfg = TrainConfig(devices=args.devices, rounds=args.rounds, local_epochs=args.local_epochs, seed=args.seed,
                      phase0_epochs=3, phase3_epochs=3)
    print(f"command: python {' '.join(sys.argv)}")
    print(f"machine: {os.cpu_count()} CPUs, {platform.machine()}, Python {platform.python_version()}, "
          f"load average {os.getloadavg()[0]:.2f} at start")
    last = f"round{args.rounds:02d}"
    runs = {}
    with tempfile.TemporaryDirectory(prefix="fedtiny-bench-") as tmp:
        tmp = Path(tmp)
        t0 = time.perf_counter()
        train(cfg, tmp / "inprocess")
        runs["in-process"] = (tmp / "inprocess", time.perf_counter() - t0)
        t0 = time.perf_counter()
        train_sim(cfg, tmp / "sim")
        runs["flower simulation"] = (tmp / "sim", time.perf_counter() - t0)
        t0 = time.perf_counter()
        (tmp / "deploy").mkdir()
        runs[f"flower deployment ({args.devices} sites)"] = (deployment(cfg, tmp / "deploy"), time.perf_counter() - t0)
        base = timings(runs["in-process"][0])
        ref = report(runs["in-process"][0])
        print(f"\n{'backend':<30} {'round 1 s':>10} {'last round s':>13} {'x in-process':>13} {'whole run s':>12}  report")
        for name, (run, wall) in runs.items():
            t = timings(run)
            same = "same" if report(run) == ref else "DIFFERS"
            print(f"{name:<30} {t['round01']:>10.2f} {t[last]:>13.2f} {t[last] / base[last]:>13.1f} {wall:>12.1f}  {same}")
    print(f"\n(load average {os.getloadavg()[0]:.2f} at the end)")


if __name__ == "__main__":
    main()
