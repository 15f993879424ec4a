"""Honest devices' mean INT8 accuracy with K faulty devices against the same devices without faults.

Reads compare result folders made with
    fedtiny compare --dataset D --faulty K --fault F --variants V --seeds 0,1,2 --out RESULTS/D-F-kK
    fedtiny compare --dataset D --variants V --seeds 0,1,2 --out RESULTS/D-k0
and prints, per dataset and fault, a table: method, honest devices' accuracy at K = 0 (the same
devices of the same seeds), at K, the loss in points, and the faulty devices' mean weight share.

    python benchmarks/honest_devices.py --results results/faulty --k 2
    python benchmarks/honest_devices.py --results results/faulty --k 1,2,3   # plus a summary per K
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from fedtiny.trainer.faults import faulty_devices

METHODS = ("fedmetaalign", "fedavg+p", "median+p", "trimmed-mean+p")


def honest(results: Path, ds: str, fault: str, k: int, method: str, seeds, n_devices: int):
    """(honest devices' mean INT8 accuracy without faults, with K faulty, faulty weight share or
    None) over the seeds whose runs exist in both folders; None when there is none."""
    d, k0 = results / f"{ds}-{fault}-k{k}", results / f"{ds}-k0"
    a0, ak, share = [], [], []
    for s in seeds:
        r0, rk = (x / "runs" / f"{method}-s{s}" / "report.json" for x in (k0, d))
        if not (r0.exists() and rk.exists()):
            continue
        bad = set(faulty_devices(n_devices, k, s))
        rep0, repk = json.loads(r0.read_text()), json.loads(rk.read_text())
        a0.append(np.mean([x["int8_acc"] for x in rep0["devices"] if x["device"] not in bad]))
        ak.append(repk["faults"]["honest_mean_int8_acc"])
        if repk["faults"]["faulty_weight_share_per_round"] and not method.startswith(("median", "trimmed")):
            share.append(np.mean(repk["faults"]["faulty_weight_share_per_round"]))
    if not a0:
        return None
    return float(np.mean(a0)), float(np.mean(ak)), (float(np.mean(share)) if share else None)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--results", type=Path, default=Path("results/faulty"))
    ap.add_argument("--k", default="2", help="one K or a list (1,2,3): with a list, a summary table of "
                                             "the losses per K follows the tables")
    ap.add_argument("--devices", type=int, default=10)
    ap.add_argument("--seeds", default="0,1,2")
    args = ap.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    ks = [int(k) for k in args.k.split(",")]
    faults = ("label-flip", "noise", "gain", "stuck", "random-update")
    for k in ks:
        for ds in ("electrical", "mechanical"):
            for fault in faults:
                rows = {m: honest(args.results, ds, fault, k, m, seeds, args.devices) for m in METHODS}
                if not any(rows.values()):
                    continue
                print(f"\n{ds}, {fault}, K={k} of {args.devices}: honest devices' INT8 %")
                print("| method | K=0 (same devices) | K | loss (pp) | faulty weight share % |")
                print("| --- | --- | --- | --- | --- |")
                for m, r in rows.items():
                    if r:
                        sh = f"{100 * r[2]:.1f}" if r[2] is not None else "n/a"
                        print(f"| {m} | {100 * r[0]:.2f} | {100 * r[1]:.2f} | {100 * (r[0] - r[1]):+.2f} | {sh} |")
    if len(ks) > 1:
        for ds in ("electrical", "mechanical"):
            for fault in faults:
                table = {m: [honest(args.results, ds, fault, k, m, seeds, args.devices) for k in ks] for m in METHODS}
                if not any(r for rs in table.values() for r in rs):
                    continue
                print(f"\n{ds}, {fault}: honest devices' loss in points (faulty weight share %), K of {args.devices}")
                print("| method | " + " | ".join(f"K={k}" for k in ks) + " |")
                print("| --- |" + " --- |" * len(ks))
                for m, rs in table.items():
                    cells = []
                    for r in rs:
                        if r is None:
                            cells.append("-")
                        else:
                            cells.append(f"{100 * (r[0] - r[1]):+.2f}" + (f" ({100 * r[2]:.1f})" if r[2] is not None else ""))
                    print(f"| {m} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
