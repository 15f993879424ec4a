"""Honest devices' mean INT8 accuracy with K faulty devices against the same devices without faults.

Reads compare result folders made with
    fedtiny compare --dataset D --faulty K --fault F --variants V --seeds 0,1,2 --out RESULTS/D-F-kK
    fedtiny compare --dataset D --variants V --seeds 0,1,2 --out RESULTS/D-k0
and prints, per dataset and fault, a table: method, honest devices' accuracy at K = 0 (the same
devices of the same seeds), at K, the loss in points, and the faulty devices' mean weight share.

    python benchmarks/honest_devices.py --results results/faulty --k 2
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from fedtiny.trainer.faults import faulty_devices

METHODS = ("fedmetaalign", "fedavg+p", "median+p", "trimmed-mean+p")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--results", type=Path, default=Path("results/faulty"))
    ap.add_argument("--k", type=int, default=2)
    ap.add_argument("--devices", type=int, default=10)
    ap.add_argument("--seeds", default="0,1,2")
    args = ap.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    for ds in ("electrical", "mechanical"):
        for fault in ("label-flip", "noise", "gain", "stuck", "random-update"):
            d, k0 = args.results / f"{ds}-{fault}-k{args.k}", args.results / f"{ds}-k0"
            if not (d.exists() and k0.exists()):
                continue
            print(f"\n{ds}, {fault}, K={args.k} of {args.devices}: honest devices' INT8 %")
            print("| method | K=0 (same devices) | K | loss (pp) | faulty weight share % |")
            for m in METHODS:
                a0, ak, share = [], [], []
                for s in seeds:
                    r0, rk = (x / "runs" / f"{m}-s{s}" / "report.json" for x in (k0, d))
                    if not (r0.exists() and rk.exists()):
                        continue
                    bad = set(faulty_devices(args.devices, args.k, s))
                    rep0, repk = json.loads(r0.read_text()), json.loads(rk.read_text())
                    a0.append(np.mean([x["int8_acc"] for x in rep0["devices"] if x["device"] not in bad]))
                    ak.append(repk["faults"]["honest_mean_int8_acc"])
                    if repk["faults"]["faulty_weight_share_per_round"] and not m.startswith(("median", "trimmed")):
                        share.append(np.mean(repk["faults"]["faulty_weight_share_per_round"]))
                if a0:
                    sh = f"{100 * np.mean(share):.1f}" if share else "n/a"
                    print(f"| {m} | {100 * np.mean(a0):.2f} | {100 * np.mean(ak):.2f} | "
                          f"{100 * (np.mean(a0) - np.mean(ak)):+.2f} | {sh} |")


if __name__ == "__main__":
    main()
