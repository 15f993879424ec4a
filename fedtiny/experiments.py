"""The paper's comparison and ablations as one command each (``fedtiny compare`` / ``ablate``).

Every variant is an ordinary run directory under ``OUT/runs/<variant>-s<seed>``; the tables, the
JSON and the plots are computed from those run directories only, so every number traces to one.
Statistics: for each run, the mean over devices of the per-device test accuracy, and the fleet-wide
INT8 false-alarm rate (normal test windows called a fault / normal test windows, every device's
pooled) and detection rate (fault windows called a fault / fault windows); over seeds, the mean and
the sample standard deviation (ddof = 1; n/a for a single seed). The ``reference-*`` variants are
a random forest on time-domain features (``trainer/reference.py``): no INT8 model, their float and
INT8 columns are the forest's accuracy.
"""
from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np

from fedtiny.trainer.config import TrainConfig
from fedtiny.trainer.faults import fault_note
from fedtiny.trainer.pipeline import Reporter, load_or_train
from fedtiny.trainer.rundir import atomic_write_bytes, atomic_write_json, read_json

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
    "reference-local": {"method": "reference-local"},
    "reference-central": {"method": "reference-central"},
}

# robust aggregation baselines, added to compare when devices misbehave (--faulty)
ROBUST_VARIANTS: dict[str, dict] = {
    "median+p": {"method": "median", "personalize": True},
    "trimmed-mean+p": {"method": "trimmed-mean", "personalize": True},
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


def mean_std(values) -> tuple[float, float | None]:
    """(mean, sample std with ddof=1; None for fewer than two values: one seed has no spread)."""
    v = np.asarray(values, dtype=np.float64)
    return float(v.mean()), float(v.std(ddof=1)) if len(v) > 1 else None


class ExperimentMismatch(ValueError):
    """OUT already holds an experiment with other options (the CLI prints one error line, exit 2)."""


def experiment_options(kind: str, base: TrainConfig, seeds, variants) -> dict:
    """Everything that decides an experiment's results: the command, seeds, variants and the
    base config (every option of ``fedtiny train``)."""
    return {"kind": kind, "seeds": [int(s) for s in seeds], "variants": list(variants), "config": base.to_dict()}


def _flat(options: dict) -> dict:
    return {**{k: v for k, v in options.items() if k != "config"}, **options.get("config", {})}


def check_experiment(out: Path, options: dict) -> None:
    """Refuse (ExperimentMismatch naming the differing options) an ``out`` that holds an experiment
    with other options, as ``train`` refuses a run directory of another config: its runs would
    not be reused and its table, JSON and plots would be replaced. The record is OUT/experiment.json
    (written when an experiment starts), else, for older results, results.json's ``meta``."""
    out = Path(out)
    old = None
    if (out / "experiment.json").exists():
        old = read_json(out / "experiment.json", "choose another --out")
    elif (out / "results.json").exists():
        meta = read_json(out / "results.json", "choose another --out").get("meta", {})
        old = meta.get("options") or ({"config": meta["config"]} if "config" in meta else None)
    if old is None:
        return
    a, b = (_flat(old), _flat(options)) if "kind" in old else (old["config"], options["config"])
    diff = sorted(k for k in set(a) | set(b) if a.get(k, "(absent)") != b.get(k, "(absent)"))
    if diff:
        raise ExperimentMismatch(f"{out} already holds {old.get('kind', 'an experiment')} results with other "
                                 f"options (differs in: {', '.join(diff)}); choose another --out")


def run_variants(base: TrainConfig, variants: dict[str, dict], seeds, out: Path,
                 reporter: Reporter | None = None, on_run=None, on_fail=None) -> dict:
    """Train (or reuse) every variant for every seed; return the results dict (see ``summarise``).

    A run that raises is recorded with its error (``on_fail(name, seed, message)``) and the others
    still run; KeyboardInterrupt stops everything (finished runs are kept and reused next time)."""
    out = Path(out)
    runs: dict[str, dict[int, Path]] = {}
    failed: list[dict] = []
    total = len(variants) * len(seeds)
    done = 0
    for name, over in variants.items():
        for seed in seeds:
            rdir = out / "runs" / f"{slug(name)}-s{seed}"
            if on_run:
                on_run(done, total, name, seed)
            done += 1
            try:
                cfg = replace(base, seed=int(seed), **over)
                load_or_train(cfg, rdir, reporter)
            except Exception as e:  # noqa: BLE001 - one failing run must not end the experiment
                if reporter is not None:
                    reporter.finish()
                msg = " ".join(str(e).split()) or type(e).__name__
                if not isinstance(e, ValueError):       # DataError / RunError are ValueErrors
                    msg = f"{type(e).__name__}: {msg}"
                failed.append({"variant": name, "seed": int(seed), "run_dir": str(rdir), "error": msg})
                if on_fail:
                    on_fail(name, seed, msg)
                continue
            runs.setdefault(name, {})[int(seed)] = rdir
    res = summarise(runs)
    res["failed"] = failed
    return res


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
                            "fleet_int8_far": rep["summary"].get("fleet_int8_far"),
                            "fleet_int8_dr": rep["summary"].get("fleet_int8_dr"),
                            "threshold_origins": rep["summary"].get("threshold_origins"),
                            "chosen_round": (rep.get("phase2") or {}).get("chosen_round"),
                            "class_names": rep.get("class_names", []),
                            "faults": rep.get("faults"),
                            "warnings": rep.get("warnings", []),
                            "devices": [{k: d[k] for k in ("device", "float_acc", "int8_acc", "int8_far", "int8_dr",
                                                           "threshold", "threshold_origin", "test_class_counts")
                                         if k in d}
                                        for d in rep["devices"]]})
            for d in rep["devices"]:
                per_dev_f.setdefault(d["device"], []).append(d["float_acc"])
                per_dev_i.setdefault(d["device"], []).append(d["int8_acc"])
        mf = mean_std([r["mean_float_acc"] for r in per_run])
        mi = mean_std([r["mean_int8_acc"] for r in per_run])
        far = mean_std_some([r["fleet_int8_far"] for r in per_run])
        dr = mean_std_some([r["fleet_int8_dr"] for r in per_run])
        faulted = [r["faults"] for r in per_run if r["faults"]]
        hon = mean_std([f["honest_mean_int8_acc"] for f in faulted]) if faulted else (None, None)
        shares = [np.mean(f["faulty_weight_share_per_round"]) for f in faulted if f["faulty_weight_share_per_round"]]
        res["variants"][name] = {
            "runs": per_run,
            "float_mean": mf[0], "float_std": mf[1], "int8_mean": mi[0], "int8_std": mi[1],
            "far_mean": far[0], "far_std": far[1], "dr_mean": dr[0], "dr_std": dr[1],
            "chosen_rounds": [r["chosen_round"] for r in per_run],
            "honest_int8_mean": hon[0], "honest_int8_std": hon[1],
            "faulty_weight_share": float(np.mean(shares)) if shares else None,
            "per_device_float": {str(k): float(np.mean(v)) for k, v in sorted(per_dev_f.items())},
            "per_device_int8": {str(k): float(np.mean(v)) for k, v in sorted(per_dev_i.items())},
        }
    return res


def mean_std_some(values) -> tuple[float | None, float | None]:
    """``mean_std`` of the values that are not None ((None, None) when none is)."""
    v = [x for x in values if x is not None]
    return mean_std(v) if v else (None, None)


def pct(v: float | None) -> str:
    return "n/a" if v is None else f"{100 * v:.2f}"


def markdown_table(res: dict, title: str) -> str:
    """Mean ± std over seeds of the mean device accuracy (float, INT8), per-device rows, the test
    windows per class of every device (the same for every variant of a seed), failed runs and the
    runs' evaluation warnings."""
    names = list(res["variants"])
    faults = any(v.get("honest_int8_mean") is not None for v in res["variants"].values())
    extra = " honest devices' INT8 % (mean ± std) | faulty devices' weight share % |" if faults else ""
    lines = [f"## {title}", "", "| variant | float acc % (mean ± std) | INT8 acc % (mean ± std) | "
             "false alarms % (INT8) | detections % (INT8) |" + extra + " seeds |",
             "| --- | --- | --- | --- | --- |" + (" --- | --- |" if faults else "") + " --- |"]
    for n in names:
        v = res["variants"][n]
        cells = ""
        if faults:
            cells = (f" {pct(v.get('honest_int8_mean'))} ± {pct(v.get('honest_int8_std'))} | "
                     f"{pct(v.get('faulty_weight_share'))} |")
        lines.append(f"| {n} | {pct(v['float_mean'])} ± {pct(v['float_std'])} | "
                     f"{pct(v['int8_mean'])} ± {pct(v['int8_std'])} | {pct(v.get('far_mean'))} ± "
                     f"{pct(v.get('far_std'))} | {pct(v.get('dr_mean'))} ± {pct(v.get('dr_std'))} |"
                     f"{cells} {len(v['runs'])} |")
    if names:
        devs = list(res["variants"][names[0]]["per_device_int8"])
        lines += ["", "Per-device INT8 accuracy % (mean over seeds):", "",
                  "| device | " + " | ".join(names) + " |", "| --- |" + " --- |" * len(names)]
        for d in devs:
            lines.append(f"| {d} | " + " | ".join(pct(res["variants"][n]["per_device_int8"].get(d))
                                                  for n in names) + " |")
        lines += _class_count_lines(res["variants"][names[0]]["runs"])
        lines += _detail_lines(res)
    if faults:
        lines += ["", "Faulty devices per seed (the same for every variant of a seed):", ""]
        lines += sorted({f"- seed {r['seed']}: {fault_note(r['faults'])}" for v in res["variants"].values()
                         for r in v["runs"] if r.get("faults")})
    failed = res.get("failed", [])
    if failed:
        lines += ["", "Failed runs:", "", "| variant | seed | error |", "| --- | --- | --- |"]
        lines += [f"| {f['variant']} | {f['seed']} | {f['error'].replace('|', '/')} |" for f in failed]
    warns = sorted({(r["seed"], w) for v in res["variants"].values() for r in v["runs"] for w in r["warnings"]})
    if warns:
        lines += ["", "Evaluation warnings:", ""] + [f"- seed {s}: {w}" for s, w in warns]
    return "\n".join(lines) + "\n"


def _detail_lines(res: dict) -> list[str]:
    """Per variant: where the thresholds came from (devices local / fleet / default, summed over
    seeds) and, for federated variants, the Phase-2 round whose model went on, per seed."""
    out = ["", "Thresholds (devices tuned locally / from the fleet histograms / default, all seeds) and "
           "the Phase-2 round chosen per seed:", "", "| variant | local / fleet / default | chosen round |",
           "| --- | --- | --- |"]
    for n, v in res["variants"].items():
        tot = {"local": 0, "fleet": 0, "default": 0}
        for r in v["runs"]:
            for k, c in (r.get("threshold_origins") or {}).items():
                tot[k] = tot.get(k, 0) + c
        rounds = "/".join(str(r.get("chosen_round")) for r in v["runs"]) if any(
            r.get("chosen_round") for r in v["runs"]) else "-"
        out.append(f"| {n} | {tot['local']} / {tot['fleet']} / {tot['default']} | {rounds} |")
    return out


def _class_count_lines(runs: list[dict]) -> list[str]:
    """Per device, its test windows per class, one ``a/b/...`` entry per seed."""
    runs = [r for r in runs if r["devices"] and "test_class_counts" in r["devices"][0]]
    if not runs:
        return []
    classes = runs[0]["class_names"]
    seeds = "/".join(str(r["seed"]) for r in runs)
    out = ["", f"Test windows per class (seeds {seeds}):", "",
           "| device | " + " | ".join(classes) + " |", "| --- |" + " --- |" * len(classes)]
    for i, d in enumerate(runs[0]["devices"]):
        cells = ["/".join(str(r["devices"][i]["test_class_counts"][k]) for r in runs) for k in range(len(classes))]
        out.append(f"| {d['device']} | " + " | ".join(cells) + " |")
    return out


def write_outputs(res: dict, out: Path, title: str, meta: dict) -> dict[str, Path]:
    """Write table.md, results.json and the PNG plots into ``out``; returns their paths."""
    from fedtiny import plots

    out = Path(out)
    if not res["variants"]:           # never replace a table (or write an empty one) with nothing
        raise ValueError("no run finished: nothing to tabulate")
    out.mkdir(parents=True, exist_ok=True)
    res = {**res, "meta": meta}
    paths = {"table": out / "table.md", "json": out / "results.json"}
    atomic_write_bytes(paths["table"], markdown_table(res, title).encode())
    atomic_write_json(paths["json"], res)
    paths.update(plots.experiment_plots(res, out))
    return paths
