"""Which front end should each data kind default to? INT8 accuracy per front end and fleet.

    python benchmarks/frontend_choice.py --datasets electrical,mechanical,classdata,detect,cwru \
        --seeds 0,1,2 --devices electrical=5,mechanical=5,classdata=3,detect=3,cwru=4 --out results/frontend

For each fleet, front end (``--frontends``, default raw,features,spectrum) and seed it trains (or
reuses) a Fed-Meta-Align run with the defaults except ``--frontend`` and ``--devices``, and prints
the mean and the worst device's INT8 test accuracy (report.json) and the mean over the seeds.
``classdata`` / ``detect`` / ``cwru`` are files in the public forms written from the built-in
physics by ``tests/realdata.py`` into ``--out``/files (benchmarks/oscillation.py ``public_file``;
``detect``: a detect_dataset.csv); any other name is a dataset ``fedtiny train`` takes. Every
number traces to a run directory under ``--out``.
"""
from __future__ import annotations

import argparse
import platform
import sys
import time
from pathlib import Path

import numpy as np


def dataset_path(name: str, out: Path) -> str:
    """The dataset argument for ``name`` (public-form files written once under ``out``/files)."""
    here = Path(__file__).resolve().parent
    sys.path.insert(0, str(here))
    if name != "detect":
        from oscillation import public_file

        return public_file(name, out)
    sys.path.insert(0, str(here.parent / "tests"))
    import realdata

    path = out / "files" / "detect_dataset.csv"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        realdata.write_detect_data(path, seed=0)
    return str(path)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--datasets", default="electrical,mechanical,classdata,detect,cwru")
    ap.add_argument("--frontends", default="raw,features,spectrum")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--devices", default="", help="per dataset, e.g. classdata=3 (default 10)")
    ap.add_argument("--out", type=Path, default=Path("results/frontend"))
    args = ap.parse_args()
    devices = {k: int(v) for k, v in (x.split("=") for x in args.devices.split(",") if x)}

    from fedtiny.trainer.config import TrainConfig
    from fedtiny.trainer.pipeline import load_or_train

    t0 = time.time()
    print(f"machine: {platform.machine()}, Python {platform.python_version()}")
    print("dataset | devices | front end | seed | mean INT8 % | worst device INT8 %")
    table = []
    for ds in args.datasets.split(","):
        n_dev = devices.get(ds, 10)
        for kind in args.frontends.split(","):
            accs = []
            for seed in [int(s) for s in args.seeds.split(",")]:
                cfg = TrainConfig(dataset=dataset_path(ds, args.out), devices=n_dev, seed=seed, frontend=kind)
                rep = load_or_train(cfg, args.out / ds / f"{kind}-s{seed}")
                per = [d["int8_acc"] for d in rep["devices"]] if "devices" in rep else []
                mean = 100 * rep["summary"]["mean_int8_acc"]
                accs.append(mean)
                worst = f"{100 * min(per):.1f}" if per else "-"
                print(f"{ds} | {n_dev} | {kind} | {seed} | {mean:.1f} | {worst}", flush=True)
            sd = np.std(accs, ddof=1) if len(accs) > 1 else float("nan")
            table.append((ds, n_dev, kind, np.mean(accs), sd, len(accs)))
    print("\ndataset | devices | front end | mean INT8 % over seeds (± sd, n)")
    for ds, n_dev, kind, m, sd, n in table:
        print(f"{ds} | {n_dev} | {kind} | {m:.1f} ± {sd:.1f} (n={n})")
    print(f"wall time {time.time() - t0:.0f} s")


if __name__ == "__main__":
    main()
