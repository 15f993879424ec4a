"""The paper's comparison and ablations as one command each (``fedtiny compare`` / ``ablate``).

Every variant is an ordinary run directory under ``OUT/runs/<variant>-s<seed>``; the tables, the
JSON and the plots are computed from those run directories only, so every number traces to one.
Statistics: for each run, the mean over devices of the per-device test accuracy; over seeds, the
mean and the sample standard deviation (ddof = 1; 0 for a single seed).
"""
from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np

from fedtiny.trainer.config import TrainConfig
from fedtiny.trainer.pipeline import Reporter, load_or_train
from fedtiny.trainer.rundir import atomic_write_bytes, atomic_write_json

# variant name -> TrainConfig overrides
COMPARE_VARIANTS: dict[str, dict] = {
    "fedmetaalign": {"method": "fedmetaalign", "personalize": True},
    "fedavg+p": {"method": "fedavg", "personalize": True},
    "fedprox+p": {"method": "fedprox", "personalize": True},
    "fedmetaalign-nop": {"method": "fedmetaalign", "personalize": False},
    "fedavg": {"method": "fedavg", "personalize": False},
    "fedprox": {"method": "fedprox", "personalize": False},
    "local": {"method": "local"},
    "centralized": {"method": "centralized"},
}

ABLATE_VARIANTS: dict[str, dict] = {
    "base (phase1, c=0.1, 20/50/30)": {},
    "no phase1": {"skip_phase1": True},
    "c=0": {"floor": 0.0},
    "c=0.3": {"floor": 0.3},
    "c=0.5": {"floor": 0.5},
    "splits 10/60/30": {"splits": (0.1, 0.6, 0.3)},
    "splits 30/40/30": {"splits": (0.3, 0.4, 0.3)},
}


def slug(name: str) -> str:
    return "".join(c if c.isalnum() or c in "+-." else "_" for c in name).strip("_")


def mean_std(values) -> tuple[float, float]:
    """(mean, sample std with ddof=1; 0.0 for fewer than two values)."""
    v = np.asarray(values, dtype=np.float64)
    return float(v.mean()), float(v.std(ddof=1)) if len(v) > 1 else 0.0


def run_variants(base: TrainConfig, variants: dict[str, dict], seeds, out: Path,
                 reporter: Reporter | None = None, on_run=None) -> dict:
    """Train (or reuse) every variant for every seed; return the results dict (see ``summarise``)."""
    out = Path(out)
    runs: dict[str, dict[int, Path]] = {}
    total = len(variants) * len(seeds)
    done = 0
    for name, over in variants.items():
        for seed in seeds:
            cfg = replace(base, seed=int(seed), **over)
            rdir = out / "runs" / f"{slug(name)}-s{seed}"
            if on_run:
                on_run(done, total, name, seed)
            load_or_train(cfg, rdir, reporter)
            runs.setdefault(name, {})[int(seed)] = rdir
            done += 1
    return summarise(runs)


def summarise(runs: dict[str, dict[int, Path]]) -> dict:
    """Collect per-run and per-device numbers from run directories into one JSON-able dict."""
    res: dict = {"variants": {}}
    for name, by_seed in runs.items():
        per_run, per_dev_f, per_dev_i = [], {}, {}
        for seed, rdir in sorted(by_seed.items()):
            rep = json.loads((rdir / "report.json").read_text())
            per_run.append({"seed": seed, "run_dir": str(rdir),
                            "mean_float_acc": rep["summary"]["mean_float_acc"],
                            "mean_int8_acc": rep["summary"]["mean_int8_acc"],
                            "devices": [{k: d[k] for k in ("device", "float_acc", "int8_acc", "threshold")}
                                        for d in rep["devices"]]})
            for d in rep["devices"]:
                per_dev_f.setdefault(d["device"], []).append(d["float_acc"])
                per_dev_i.setdefault(d["device"], []).append(d["int8_acc"])
        mf = mean_std([r["mean_float_acc"] for r in per_run])
        mi = mean_std([r["mean_int8_acc"] for r in per_run])
        res["variants"][name] = {
            "runs": per_run,
            "float_mean": mf[0], "float_std": mf[1], "int8_mean": mi[0], "int8_std": mi[1],
            "per_device_float": {str(k): float(np.mean(v)) for k, v in sorted(per_dev_f.items())},
            "per_device_int8": {str(k): float(np.mean(v)) for k, v in sorted(per_dev_i.items())},
        }
    return res


def pct(v: float) -> str:
    return f"{100 * v:.2f}"


def markdown_table(res: dict, title: str) -> str:
    """Mean ± std over seeds of the mean device accuracy (float, INT8), then per-device rows."""
    names = list(res["variants"])
    lines = [f"## {title}", "", "| variant | float acc % (mean ± std) | INT8 acc % (mean ± std) | seeds |",
             "| --- | --- | --- | --- |"]
    for n in names:
        v = res["variants"][n]
        lines.append(f"| {n} | {pct(v['float_mean'])} ± {pct(v['float_std'])} | "
                     f"{pct(v['int8_mean'])} ± {pct(v['int8_std'])} | {len(v['runs'])} |")
    devs = list(res["variants"][names[0]]["per_device_int8"])
    lines += ["", "Per-device INT8 accuracy % (mean over seeds):", "",
              "| device | " + " | ".join(names) + " |", "| --- |" + " --- |" * len(names)]
    for d in devs:
        lines.append(f"| {d} | " + " | ".join(pct(res["variants"][n]["per_device_int8"][d]) for n in names) + " |")
    return "\n".join(lines) + "\n"


def write_outputs(res: dict, out: Path, title: str, meta: dict) -> dict[str, Path]:
    """Write table.md, results.json and the PNG plots into ``out``; returns their paths."""
    from fedtiny import plots

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    res = {**res, "meta": meta}
    paths = {"table": out / "table.md", "json": out / "results.json"}
    atomic_write_bytes(paths["table"], markdown_table(res, title).encode())
    atomic_write_json(paths["json"], res)
    paths.update(plots.experiment_plots(res, out))
    return paths
