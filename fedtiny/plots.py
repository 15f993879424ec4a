"""Plots (matplotlib, Agg backend) of run directories: Phase-2 accuracy per round, per-device
accuracy, Fed-Meta-Align weights and cosines per round, confusion matrices."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def read_metrics(run: Path) -> list[dict]:
    return [json.loads(line) for line in (Path(run) / "metrics.jsonl").read_text().splitlines() if line]


def confusion(run: Path, n_classes: int) -> np.ndarray:
    """Confusion counts C[true, predicted] of the INT8 decisions pooled over the run's devices."""
    c = np.zeros((n_classes, n_classes), np.int64)
    for f in sorted((Path(run) / "devices").glob("dev*/test_split.npz")):
        with np.load(f) as z:
            np.add.at(c, (z["y"], z["pred_int8"]), 1)
    return c


def _save(fig, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    _plt().close(fig)
    return path


def round_accuracy_plot(curves: dict[str, list[tuple[int, float]]], path: Path) -> Path:
    """One line per distinct curve. Variants that share Phase 2 (with and without Phase 3) have
    identical curves; they are drawn once, labelled with every name, instead of hiding each other."""
    plt = _plt()
    merged: dict[tuple, list[str]] = {}
    for name, pts in curves.items():
        if pts:
            merged.setdefault(tuple(pts), []).append(name)
    fig, ax = plt.subplots(figsize=(6.5, 4))
    for pts, names in merged.items():
        ax.plot([p[0] for p in pts], [100 * p[1] for p in pts], marker="o", label=" = ".join(names))
    ax.set_xlabel("Phase-2 round")
    ax.set_ylabel("global model accuracy on device validation (%)")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return _save(fig, path)


def device_bars_plot(per_device: dict[str, dict[str, float]], path: Path) -> Path:
    plt = _plt()
    names = list(per_device)
    devs = list(per_device[names[0]])
    fig, ax = plt.subplots(figsize=(max(6, len(devs) * 0.8), 4))
    width = 0.8 / len(names)
    for i, n in enumerate(names):
        ax.bar(np.arange(len(devs)) + i * width, [100 * per_device[n][d] for d in devs], width, label=n)
    ax.set_xticks(np.arange(len(devs)) + 0.4 - width / 2, devs)
    ax.set_xlabel("device")
    ax.set_ylabel("INT8 test accuracy (%)")
    ax.set_ylim(0, 100)
    # below the axes, so that no bar is hidden behind it
    ax.legend(fontsize=7, ncol=min(len(names), 4), loc="upper center", bbox_to_anchor=(0.5, -0.14))
    return _save(fig, path)


def weights_heatmap(metrics: list[dict], path: Path) -> Path | None:
    rounds = [m for m in metrics if m.get("phase") == "phase2" and "cos" in m]
    if not rounds:
        return None
    plt = _plt()
    w = np.array([m["weights"] for m in rounds]).T
    c = np.array([m["cos"] for m in rounds]).T
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, data, title, cmap in ((axes[0], w, "aggregation weight w_k", "viridis"),
                                  (axes[1], c, "cos(d_k, mean update)", "coolwarm")):
        im = ax.imshow(data, aspect="auto", cmap=cmap, vmin=None if cmap == "viridis" else -1,
                       vmax=None if cmap == "viridis" else 1)
        ax.set_xlabel("round")
        ax.set_ylabel("device")
        ax.set_xticks(range(data.shape[1]), [str(m["round"]) for m in rounds])
        ax.set_title(title)
        fig.colorbar(im, ax=ax)
    return _save(fig, path)


def confusion_plot(c: np.ndarray, class_names: list[str], title: str, path: Path) -> Path:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(4.5, 4))
    ax.imshow(c, cmap="Blues")
    for i in range(c.shape[0]):
        for j in range(c.shape[1]):
            ax.text(j, i, str(c[i, j]), ha="center", va="center", fontsize=7)
    ax.set_xticks(range(len(class_names)), class_names, rotation=45, ha="right", fontsize=7)
    ax.set_yticks(range(len(class_names)), class_names, fontsize=7)
    ax.set_xlabel("predicted (INT8)")
    ax.set_ylabel("true")
    ax.set_title(title, fontsize=9)
    return _save(fig, path)


def experiment_plots(res: dict, out: Path) -> dict[str, Path]:
    """All plots of a compare/ablate result: curves and weights from each variant's first seed."""
    out = Path(out)
    paths: dict[str, Path] = {}
    curves, per_device = {}, {}
    first_runs = {n: Path(v["runs"][0]["run_dir"]) for n, v in res["variants"].items()}
    for n, run in first_runs.items():
        curves[n] = [(m["round"], m["global_val_acc"]) for m in read_metrics(run) if m.get("phase") == "phase2"]
        per_device[n] = res["variants"][n]["per_device_int8"]
    paths["rounds_png"] = round_accuracy_plot(curves, out / "phase2_accuracy.png")
    paths["devices_png"] = device_bars_plot(per_device, out / "device_accuracy.png")
    fma = next((r for n, r in first_runs.items() if any(m.get("phase") == "phase2" and "cos" in m
                                                         for m in read_metrics(r))), None)
    if fma is not None:
        p = weights_heatmap(read_metrics(fma), out / "fma_weights_cos.png")
        if p:
            paths["weights_png"] = p
    for n, run in first_runs.items():
        rep = json.loads((run / "report.json").read_text())
        names = rep["class_names"]
        from fedtiny.experiments import slug

        paths[f"confusion_{n}"] = confusion_plot(confusion(run, len(names)), names, n,
                                                 out / f"confusion_{slug(n)}.png")
    return paths
