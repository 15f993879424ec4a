"""Plots (matplotlib, Agg backend) of run directories: Phase-2 accuracy per round, per-device
accuracy (float and INT8), Fed-Meta-Align weights and cosines per round, confusion matrices.

Conventions every figure follows: accuracies are drawn on the full 0-100 % range (no silent zoom),
axes that count something (rounds, devices, windows) only get integer ticks, every colour scale has
a labelled colorbar, and text drawn on a coloured cell picks black or white by the cell's luminance.

Each plotting function takes a ``path`` (a file name or a binary file object such as ``BytesIO``)
and returns it after writing one PNG there.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import BinaryIO, Sequence

import numpy as np

from fedtiny.trainer.rundir import read_json

Target = Path | BinaryIO


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _integer_ticks(axis, labels: Sequence[str] | None = None) -> None:
    """Put only integer ticks on ``axis`` (an x/y axis or a colorbar's long axis). With ``labels``,
    tick position i shows ``labels[i]`` (positions outside the labels show nothing)."""
    from matplotlib.ticker import FuncFormatter, MaxNLocator

    axis.set_major_locator(MaxNLocator(integer=True))
    if labels is not None:
        labels = list(labels)

        def fmt(x, _pos):
            i = int(round(x))
            return labels[i] if abs(x - i) < 1e-9 and 0 <= i < len(labels) else ""

        axis.set_major_formatter(FuncFormatter(fmt))


def read_metrics(run: Path) -> list[dict]:
    return [json.loads(line) for line in (Path(run) / "metrics.jsonl").read_text().splitlines() if line]


def confusion(run: Path, n_classes: int) -> np.ndarray:
    """Confusion counts C[true, predicted] of the INT8 decisions pooled over the run's devices."""
    c = np.zeros((n_classes, n_classes), np.int64)
    for f in sorted((Path(run) / "devices").glob("dev*/test_split.npz")):
        with np.load(f) as z:
            np.add.at(c, (z["y"], z["pred_int8"]), 1)
    return c


def relative_luminance(rgb: Sequence[float]) -> float:
    """WCAG 2 relative luminance (0 = black, 1 = white) of an sRGB colour with channels in 0..1
    (an alpha channel, if given, is ignored)."""
    def lin(c: float) -> float:
        return c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4

    r, g, b = (lin(float(c)) for c in rgb[:3])
    return 0.2126 * r + 0.7152 * g + 0.0722 * b


def text_color(background: Sequence[float]) -> str:
    """"black" or "white", whichever has the higher WCAG contrast ratio on ``background``."""
    lum = relative_luminance(background)
    on_black = (lum + 0.05) / 0.05       # contrast of black text
    on_white = 1.05 / (lum + 0.05)       # contrast of white text
    return "black" if on_black >= on_white else "white"


def legend_label(names: Sequence[str], notes: dict[str, str] | None = None) -> str:
    """Legend entry of one drawn curve shared by ``names``. Several names means their curves are
    identical point for point; the label says so, with the settings that explain it (``notes``,
    e.g. ``{"fedprox": "mu=0.01"}``), so that "a = b" does not read as "a is the same method as b"."""
    names = list(names)
    if len(names) == 1:
        return names[0]
    extra = list(dict.fromkeys(notes[n] for n in names if notes and notes.get(n)))
    at = f" at {', '.join(extra)}" if extra else ""
    return f"{' = '.join(names)}\n(curves coincide{at})"


def _save(fig, path: Target) -> Target:
    fig.tight_layout()
    fig.savefig(path, dpi=110, format="png")
    _plt().close(fig)
    return path


def round_accuracy_plot(curves: dict[str, list[tuple[int, float]]], path: Target,
                        notes: dict[str, str] | None = None) -> Target:
    """Global Phase-2 accuracy per round, one line per distinct curve, on the full 0-100 % range.
    Variants with identical curves (with and without Phase 3; FedAvg and FedProx at a small mu)
    are drawn once with a label that says the curves coincide (see ``legend_label``)."""
    plt = _plt()
    merged: dict[tuple, list[str]] = {}
    for name, pts in curves.items():
        if pts:
            merged.setdefault(tuple(pts), []).append(name)
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    for pts, names in merged.items():
        ax.plot([p[0] for p in pts], [100 * p[1] for p in pts], marker="o", label=legend_label(names, notes))
    ax.set_xlabel("Phase-2 round")
    ax.set_ylabel("global model accuracy on device validation (%)")
    ax.set_ylim(0, 100)
    _integer_ticks(ax.xaxis)
    ax.grid(alpha=0.3)
    if merged:
        ax.legend(fontsize=7, loc="best")
    return _save(fig, path)


def device_bars_plot(per_device: dict[str, dict[str, float]], path: Target,
                     per_device_float: dict[str, dict[str, float]] | None = None,
                     ylabel: str = "test accuracy (%)") -> Target:
    """Test accuracy per device: for every variant an INT8 bar, and with ``per_device_float`` the
    float model's bar beside it (same colour, hatched and lighter). Full 0-100 % range."""
    from matplotlib.patches import Patch

    plt = _plt()
    names = list(per_device)
    devs = list(per_device[names[0]])
    kinds = [("float", per_device_float), ("INT8", per_device)] if per_device_float else [("INT8", per_device)]
    n_bars = len(names) * len(kinds)
    fig, ax = plt.subplots(figsize=(max(6.0, len(devs) * (0.5 + 0.12 * n_bars)), 4.2))
    width = 0.8 / n_bars
    x = np.arange(len(devs))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    annotate = n_bars * len(devs) <= 24
    for i, n in enumerate(names):
        color = colors[i % len(colors)]
        for j, (kind, data) in enumerate(kinds):
            k = i * len(kinds) + j
            vals = [100 * data[n][d] for d in devs]
            style = dict(color=color, alpha=0.45, hatch="//", edgecolor=color) if kind == "float" else dict(color=color)
            bars = ax.bar(x + k * width, vals, width, **style)
            if annotate:
                ax.bar_label(bars, fmt="%.1f", fontsize=6, padding=1)
    ax.set_xticks(x + 0.4 - width / 2, devs)
    ax.set_xlabel("device")
    ax.set_ylabel(ylabel)
    ax.set_ylim(0, 105 if annotate else 100)
    ax.set_yticks(range(0, 101, 20))
    handles = [Patch(color=colors[i % len(colors)], label=n) for i, n in enumerate(names)]
    if per_device_float:
        handles += [Patch(facecolor="white", hatch="//", edgecolor="black", label="float (hatched, light)"),
                    Patch(color="black", label="INT8 (solid)")]
    # below the axes, so that no bar is hidden behind it
    ax.legend(handles=handles, fontsize=7, ncol=min(len(handles), 4), loc="upper center",
              bbox_to_anchor=(0.5, -0.14))
    return _save(fig, path)


# what cos_k is measured against, by --align-ref (trainer/aggregation.py reference_direction)
ALIGN_REF_LABELS = {"mean": "mean update", "normalized": "mean of unit-length updates",
                    "server": "blend of previous server step and mean unit update"}


def weights_heatmap(metrics: list[dict], path: Target, align_ref: str = "mean") -> Target | None:
    """Fed-Meta-Align's aggregation weight and cosine per device (rows) and Phase-2 round
    (columns), the cosine titled by the run's ``--align-ref``; ``None`` when the metrics hold no
    Fed-Meta-Align round."""
    rounds = [m for m in metrics if m.get("phase") == "phase2" and "cos" in m]
    if not rounds:
        return None
    plt = _plt()
    w = np.array([m["weights"] for m in rounds]).T
    c = np.array([m["cos"] for m in rounds]).T
    k = w.shape[0]
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    panels = ((axes[0], w, "aggregation weight w_k (sums to 1 per round)", "viridis", None, None,
               f"w_k (uniform = 1/{k} = {1 / k:.3g})"),
              (axes[1], c, f"cos(d_k, {ALIGN_REF_LABELS.get(align_ref, align_ref)})\n(--align-ref {align_ref})",
               "coolwarm", -1, 1, "cosine similarity"))
    for ax, data, title, cmap, vmin, vmax, bar_label in panels:
        im = ax.imshow(data, aspect="auto", cmap=cmap, vmin=vmin, vmax=vmax, interpolation="nearest")
        ax.set_xlabel("Phase-2 round")
        ax.set_ylabel("device")
        _integer_ticks(ax.xaxis, [str(m["round"]) for m in rounds])
        _integer_ticks(ax.yaxis)
        ax.set_title(title)
        fig.colorbar(im, ax=ax, label=bar_label)
    return _save(fig, path)


def weights_before_after_plot(runs: dict[str, list[dict]], path: Target) -> Target | None:
    """One row per run (label -> its metrics lines): Fed-Meta-Align's aggregation weight per device
    and Phase-2 round (left, one colour scale for all rows) and the global model's Phase-2
    validation accuracy per round (right, 0-100 %): how the weights move when the global model
    oscillates, and after an option damps it. ``None`` when no run holds a Fed-Meta-Align round."""
    rows = {name: [m for m in ms if m.get("phase") == "phase2" and "weights" in m] for name, ms in runs.items()}
    rows = {k: v for k, v in rows.items() if v}
    if not rows:
        return None
    plt = _plt()
    vmax = max(max(max(m["weights"]) for m in r) for r in rows.values())
    fig, axes = plt.subplots(len(rows), 2, figsize=(11, 3.3 * len(rows)), squeeze=False,
                             gridspec_kw={"width_ratios": [1.6, 1]})
    for (name, r), (ax_w, ax_a) in zip(rows.items(), axes):
        w = np.array([m["weights"] for m in r]).T
        im = ax_w.imshow(w, aspect="auto", cmap="viridis", vmin=0, vmax=vmax, interpolation="nearest")
        ax_w.set_title(f"{name}: aggregation weight w_k", fontsize=9)
        ax_w.set_xlabel("Phase-2 round")
        ax_w.set_ylabel("device")
        _integer_ticks(ax_w.xaxis, [str(m["round"]) for m in r])
        _integer_ticks(ax_w.yaxis)
        fig.colorbar(im, ax=ax_w, label=f"w_k (uniform = 1/{w.shape[0]})")
        pts = [(m["round"], m["global_val_acc"]) for m in r if m.get("global_val_acc") is not None]
        ax_a.plot([p[0] for p in pts], [100 * p[1] for p in pts], marker="o")
        ax_a.set_title("global model, Phase-2 validation", fontsize=9)
        ax_a.set_xlabel("Phase-2 round")
        ax_a.set_ylabel("accuracy (%)")
        ax_a.set_ylim(0, 100)
        _integer_ticks(ax_a.xaxis)
        ax_a.grid(alpha=0.3)
    return _save(fig, path)


def confusion_plot(c: np.ndarray, class_names: list[str], title: str, path: Target) -> Target:
    """Confusion counts C[true, predicted] with each count written in black or white, whichever
    reads better on its cell, and a colorbar of the count (integer ticks)."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5.2, 4.2))
    im = ax.imshow(c, cmap="Blues", vmin=0)
    for i in range(c.shape[0]):
        for j in range(c.shape[1]):
            ax.text(j, i, str(c[i, j]), ha="center", va="center", fontsize=7,
                    color=text_color(im.cmap(im.norm(c[i, j]))))
    ax.set_xticks(range(len(class_names)), class_names, rotation=45, ha="right", fontsize=7)
    ax.set_yticks(range(len(class_names)), class_names, fontsize=7)
    ax.set_xlabel("predicted (INT8)")
    ax.set_ylabel("true")
    ax.set_title(title, fontsize=9)
    bar = fig.colorbar(im, ax=ax, label="test windows")
    _integer_ticks(bar.ax.yaxis)
    return _save(fig, path)


def run_align_ref(run: Path) -> str:
    """The run's --align-ref (config.json); runs written before the option existed used the mean."""
    return str(read_json(Path(run) / "config.json").get("align_ref", "mean"))


def _curve_notes(run: Path) -> str | None:
    """The setting that matters when this run's Phase-2 curve coincides with another's."""
    try:
        cfg = json.loads((Path(run) / "config.json").read_text())
    except (OSError, ValueError):
        return None
    return f"mu={cfg['mu']:g}" if cfg.get("method") == "fedprox" and "mu" in cfg else None


def experiment_plots(res: dict, out: Path) -> dict[str, Path]:
    """All plots of a compare/ablate result: curves and weights from each variant's first seed."""
    from fedtiny.experiments import slug

    out = Path(out)
    paths: dict[str, Path] = {}
    curves, per_device, per_device_float, notes = {}, {}, {}, {}
    first_runs = {n: Path(v["runs"][0]["run_dir"]) for n, v in res["variants"].items()}
    for n, run in first_runs.items():
        curves[n] = [(m["round"], m["global_val_acc"]) for m in read_metrics(run) if m.get("phase") == "phase2"]
        per_device[n] = res["variants"][n]["per_device_int8"]
        per_device_float[n] = res["variants"][n].get("per_device_float")
        note = _curve_notes(run)
        if note:
            notes[n] = note
    paths["rounds_png"] = round_accuracy_plot(curves, out / "phase2_accuracy.png", notes)
    paths["devices_png"] = device_bars_plot(per_device, out / "device_accuracy.png",
                                            per_device_float if all(per_device_float.values()) else None,
                                            ylabel="test accuracy (%), mean over seeds")
    fma = next((r for n, r in first_runs.items() if any(m.get("phase") == "phase2" and "cos" in m
                                                         for m in read_metrics(r))), None)
    if fma is not None:
        p = weights_heatmap(read_metrics(fma), out / "fma_weights_cos.png", run_align_ref(fma))
        if p:
            paths["weights_png"] = p
    for n, run in first_runs.items():
        rep = read_json(run / "report.json")
        names = rep["class_names"]
        c = confusion(run, len(names))
        if c.sum():                        # the classical references keep no per-window decisions
            paths[f"confusion_{n}"] = confusion_plot(c, names, n, out / f"confusion_{slug(n)}.png")
    return paths
