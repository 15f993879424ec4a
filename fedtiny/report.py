"""``fedtiny report RUN``: one self-contained HTML page (images inlined as base64 PNG) of a run."""
from __future__ import annotations

import base64
import html
import json
import tempfile
from pathlib import Path

from fedtiny import plots


def _img(path: Path | None) -> str:
    if path is None:
        return ""
    data = base64.b64encode(Path(path).read_bytes()).decode()
    return f'<img src="data:image/png;base64,{data}" style="max-width:100%">'


def render_report(run: Path) -> str:
    run = Path(run)
    rep = json.loads((run / "report.json").read_text())
    cfg = json.loads((run / "config.json").read_text())
    metrics = plots.read_metrics(run)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        curve = [(m["round"], m["global_val_acc"]) for m in metrics if m.get("phase") == "phase2"]
        imgs = {
            "rounds": plots.round_accuracy_plot({rep["method"]: curve}, tmp / "r.png") if curve else None,
            "devices": plots.device_bars_plot({rep["method"]: {str(d["device"]): d["int8_acc"]
                                                               for d in rep["devices"]}}, tmp / "d.png"),
            "weights": plots.weights_heatmap(metrics, tmp / "w.png"),
            "confusion": plots.confusion_plot(plots.confusion(run, len(rep["class_names"])), rep["class_names"],
                                              "INT8 decisions, all devices", tmp / "c.png"),
        }
        parts = {k: _img(v) for k, v in imgs.items()}
    rows = "".join(
        f"<tr><td>{d['device']}</td><td>{d['n_test']}</td><td>{100 * d['float_acc']:.1f}</td>"
        f"<td>{100 * d['int8_acc']:.1f}</td><td>{d['threshold']:.3f}</td><td>{d['model_bytes']}</td>"
        f"<td>{d['arena_bytes']}</td></tr>" for d in rep["devices"])
    s = rep["summary"]
    cfg_rows = "".join(f"<tr><td>{html.escape(k)}</td><td>{html.escape(str(v))}</td></tr>" for k, v in cfg.items())
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>fedtiny report: {html.escape(run.name)}</title>
<style>body{{font-family:sans-serif;max-width:1000px;margin:auto}} table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:2px 8px;text-align:right}}</style></head><body>
<h1>{html.escape(rep['method'])} on {html.escape(str(rep['dataset']))} (seed {rep['seed']})</h1>
<p>Mean device accuracy: float {100 * s['mean_float_acc']:.2f} %, INT8 {100 * s['mean_int8_acc']:.2f} %
(largest INT8 drop {s['max_int8_drop_pp']:.2f} pp); model {s['max_model_bytes']} B, arena {s['max_arena_bytes']} B.</p>
<h2>Devices</h2><table><tr><th>device</th><th>test n</th><th>float %</th><th>INT8 %</th><th>threshold</th>
<th>model B</th><th>arena B</th></tr>{rows}</table>
<h2>Phase-2 global accuracy per round</h2>{parts['rounds'] or '<p>(no Phase 2 in this run)</p>'}
<h2>Per-device accuracy</h2>{parts['devices']}
<h2>Aggregation weights and cosines</h2>{parts['weights'] or '<p>(not a Fed-Meta-Align run)</p>'}
<h2>Confusion matrix</h2>{parts['confusion']}
<h2>Configuration</h2><table>{cfg_rows}</table>
</body></html>
"""
