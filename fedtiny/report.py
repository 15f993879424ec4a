"""``fedtiny report RUN``: one self-contained HTML page (images inlined as base64 PNG) of a run,
with the bench results found in ``RUN/bench/*.json`` (written by ``fedtiny bench``)."""
from __future__ import annotations

import base64
import html
import io
import json
import os
from pathlib import Path

from fedtiny import plots
from fedtiny.errors import UserError
from fedtiny.trainer.faults import fault_note

CLOCKS = {"host": "host (the emulator's host time, not a board)", "device": "device (the board's own timer)",
          "icount": "icount (instructions counted by QEMU -icount on qemu-m4, not microseconds of a real board)"}



def _name(d: dict) -> str:
    """A report row's device: its name (a fleet folder's device) or number."""
    return str(d.get("name", d["device"]))

def _img(png: io.BytesIO | None) -> str:
    if png is None:
        return ""
    data = base64.b64encode(png.getvalue()).decode()
    return f'<img src="data:image/png;base64,{data}" style="max-width:100%">'


def _pct(v) -> str:
    return "n/a" if v is None else f"{100 * float(v):.1f}"


# --------------------------------------------------------------------------- bench results

def _looks_like_result(d) -> bool:
    """True when ``d`` has the fields of a BenchResult the report shows, with usable types."""
    if not isinstance(d, dict) or not isinstance(d.get("latency_us"), dict):
        return False
    try:
        int(d["device_id"]), int(d["n"]), float(d["accuracy"])
    except (KeyError, TypeError, ValueError):
        return False
    return True


def _count(items) -> int:
    return len(items) if isinstance(items, list) else 0


def load_bench_results(run: Path) -> tuple[list[dict], list[str]]:
    """The per-board results in ``RUN/bench/*.json`` (``summary.json`` of a multi-board bench is
    not one) and a note for every file that could not be read as one; both sorted by file name."""
    results, problems = [], []
    for f in sorted((Path(run) / "bench").glob("*.json")):
        if f.name == "summary.json":
            continue
        try:
            d = json.loads(f.read_text())
        except (OSError, ValueError) as e:
            problems.append(f"{f.name}: unreadable ({type(e).__name__})")
            continue
        if not _looks_like_result(d):
            problems.append(f"{f.name}: not a fedtiny bench result")
            continue
        results.append({**d, "_file": f.name})
    return results, problems


def bench_rows(results: list[dict], report: dict) -> list[dict]:
    """One display row per bench result: what the board measured next to what the run expects.

    ``run_int8_same`` is the run's INT8 accuracy on exactly the windows the board evaluated (the
    bench computes it), ``run_int8_all`` the run's INT8 accuracy on the device's whole test split
    (report.json); ``model_matches`` compares the board's model hash with this run's device."""
    by_dev = {int(d["device"]): d for d in report.get("devices", [])}
    rows = []
    for r in results:
        dev = int(r["device_id"])
        run_dev = by_dev.get(dev)
        stream = r.get("stream") if isinstance(r.get("stream"), dict) else {}
        mismatches = (_count(r.get("decision_mismatches")) + _count(r.get("label_mismatches"))
                      + _count(stream.get("decision_mismatches")))
        sha = (run_dev or {}).get("model_sha256")
        lat = r.get("latency_us") or {}
        clock = str(lat.get("clock") or r.get("clock") or "?")
        rows.append({
            "file": r.get("_file", ""),
            "board": str(r.get("board", "?")),
            "port": str(r.get("port", "?")),
            "device": dev,
            "model_matches": None if not sha or not r.get("model_hash")
            else str(r["model_hash"]).lower() == str(sha).lower(),
            "n": int(r["n"]),
            "correct": r.get("correct"),
            "accuracy": float(r["accuracy"]),
            "run_int8_same": r.get("expected_accuracy"),
            "run_int8_all": None if run_dev is None else run_dev.get("int8_acc"),
            "mismatches": mismatches,
            "stream_n": int(stream.get("n") or 0),
            "stream_accuracy": stream.get("accuracy"),
            "latency": {k: lat.get(k) for k in ("min", "mean", "p50", "p95", "max")},
            "clock": clock,
            "date": str(r.get("finished_at") or "?"),
            "ok": r.get("ok"),
            "warnings": list(r.get("warnings") or []),
        })
    return sorted(rows, key=lambda row: (row["device"], row["port"], row["file"]))


def _yes_no(v) -> str:
    return "n/a" if v is None else ("yes" if v else "<b>NO</b>")


def bench_section(rows: list[dict], problems: list[str], run_name: str) -> str:
    """HTML of the bench section: a table of the results, the clocks the latencies were measured
    with, the bench's warnings and the files that could not be read."""
    e = html.escape
    if not rows and not problems:
        return (f"<p>(no bench results in {e(run_name)}/bench/; "
                f"<code>fedtiny bench --port PORT --run {e(run_name)}</code> writes them there)</p>")
    body = []
    for r in rows:
        lat = r["latency"]
        status = "n/a" if r["ok"] is None else ("ok" if r["ok"] else "<b>mismatch</b>")
        correct = "" if r["correct"] is None else f"{r['correct']} / "
        stream = (f"{r['stream_n']} ({_pct(r['stream_accuracy'])} %)" if r["stream_n"] else "-")
        latency = " / ".join("-" if lat[k] is None else str(lat[k]) for k in ("mean", "p50", "p95", "max"))
        body.append(
            f"<tr><td>{e(r['board'])}<br><small>{e(r['port'])}</small></td><td>{r['device']}</td>"
            f"<td>{_yes_no(r['model_matches'])}</td><td>{correct}{r['n']}</td><td>{_pct(r['accuracy'])}</td>"
            f"<td>{_pct(r['run_int8_same'])} / {_pct(r['run_int8_all'])}</td><td>{r['mismatches']}</td>"
            f"<td>{stream}</td><td>{latency}</td><td>{e(r['clock'])}</td>"
            f"<td>{e(r['date'].replace('T', ' '))}</td><td>{status}</td></tr>")
    clocks = sorted({r["clock"] for r in rows})
    notes = [f"Latency clock {e(CLOCKS.get(c, c))}." for c in clocks]
    notes += [f"Warning ({e(r['port'])}, device {r['device']}): {e(w)}" for r in rows for w in r["warnings"]]
    notes += [f"Skipped {e(p)}." for p in problems]
    table = ('<table style="font-size:90%"><tr><th>board<br>port</th><th>device</th><th>model = run\'s</th>'
             "<th>correct / n</th><th>board acc %</th><th>run INT8 %<br>same windows / all test</th>"
             "<th>decision mismatches</th><th>streamed (acc)</th><th>latency µs<br>mean / p50 / p95 / max</th>"
             "<th>clock</th><th>finished</th><th>status</th></tr>"
             + "".join(body) + "</table>") if rows else ""
    return table + "".join(f"<p>{n}</p>" for n in notes)


# --------------------------------------------------------------------------- the page

def render_report(run: Path) -> str:
    """The report page of the finished run ``run`` as one HTML string (no file is written)."""
    run = Path(run)
    rep = json.loads((run / "report.json").read_text())
    cfg = json.loads((run / "config.json").read_text())
    metrics = plots.read_metrics(run)
    curve = [(m["round"], m["global_val_acc"]) for m in metrics if m.get("phase") == "phase2"]
    method = rep["method"]
    imgs = {
        "rounds": plots.round_accuracy_plot({method: curve}, io.BytesIO()) if curve else None,
        "devices": plots.device_bars_plot({method: {_name(d): d["int8_acc"] for d in rep["devices"]}},
                                          io.BytesIO(),
                                          {method: {_name(d): d["float_acc"] for d in rep["devices"]}}),
        "weights": plots.weights_heatmap(metrics, io.BytesIO(), cfg.get("align_ref", "mean")),
        "confusion": plots.confusion_plot(plots.confusion(run, len(rep["class_names"])), rep["class_names"],
                                          "INT8 decisions, all devices", io.BytesIO()),
    }
    parts = {k: _img(v) for k, v in imgs.items()}
    results, problems = load_bench_results(run)
    bench = bench_section(bench_rows(results, rep), problems, run.name)
    rows = "".join(
        f"<tr><td>{html.escape(_name(d))}</td><td>{d['n_test']}</td><td>{100 * d['float_acc']:.1f}</td>"
        f"<td>{100 * d['int8_acc']:.1f}</td><td>{_pct(d.get('int8_far'))}</td><td>{_pct(d.get('int8_dr'))}</td>"
        f"<td>{d['threshold']:.3f}</td><td>{html.escape(str(d.get('threshold_origin', 'n/a')))}</td>"
        f"<td>{d['model_bytes']}</td><td>{d['arena_bytes']}</td></tr>" for d in rep["devices"])
    s = rep["summary"]
    faults = html.escape(" " + fault_note(rep["faults"])) if rep.get("faults") else ""
    fleet = (f"<p>Fleet-wide (every device's INT8 test windows pooled): accuracy {_pct(s.get('fleet_int8_acc'))} %, "
             f"false alarms {_pct(s.get('fleet_int8_far'))} % of normal windows, detections "
             f"{_pct(s.get('fleet_int8_dr'))} % of fault windows. Thresholds: "
             + ", ".join(f"{c} {o}" for o, c in (s.get("threshold_origins") or {}).items()) + ".</p>")
    ph2 = rep.get("phase2") or {}
    if ph2:
        fleet += (f"<p>Phase 2: {ph2['rounds_run']} round(s) run (--rounds {html.escape(str(ph2['rounds']))}); "
                  f"the model of round {ph2['chosen_round']} went on to Phase 3.</p>")
    cfg_rows = "".join(f"<tr><td>{html.escape(k)}</td><td>{html.escape(str(v))}</td></tr>" for k, v in cfg.items())
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>fedtiny report: {html.escape(run.name)}</title>
<style>body{{font-family:sans-serif;max-width:1000px;margin:auto}} table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:2px 8px;text-align:right}}</style></head><body>
<h1>{html.escape(method)} on {html.escape(str(rep['dataset']))} (seed {rep['seed']})</h1>
<p>Mean device accuracy: float {100 * s['mean_float_acc']:.2f} %, INT8 {100 * s['mean_int8_acc']:.2f} %
(largest INT8 drop {s['max_int8_drop_pp']:.2f} pp); model {s['max_model_bytes']} B, arena used (host) {s['max_arena_bytes']} B.{faults}</p>
{fleet}
<h2>Devices</h2><table><tr><th>device</th><th>test n</th><th>float %</th><th>INT8 %</th><th>false alarms %</th>
<th>detections %</th><th>threshold</th><th>threshold from</th><th>model B</th><th>arena used B (host)</th></tr>{rows}</table>
<h2 id="bench">Bench</h2>{bench}
<h2>Phase-2 global accuracy per round</h2>{parts['rounds'] or '<p>(no Phase 2 in this run)</p>'}
<h2>Per-device accuracy</h2>{parts['devices']}
<h2>Aggregation weights and cosines</h2>{parts['weights'] or '<p>(not a Fed-Meta-Align run)</p>'}
<h2>Confusion matrix</h2>{parts['confusion']}
<h2>Configuration</h2><table>{cfg_rows}</table>
</body></html>
"""


def _write_whole(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file in the same folder and a rename, so the
    file appears whole or not at all; the temporary file is removed on any failure."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            tmp.unlink(missing_ok=True)
        except OSError:
            pass
        raise


def write_report(run: Path, out: Path | None = None) -> Path:
    """Render the report of ``run`` and write it to ``out`` (default ``RUN/report.html``).
    Raises ``UserError`` (one line, exit 2 in the CLI) when the run is not finished or the output
    cannot be written; nothing is left behind then."""
    run = Path(run)
    if not (run / "report.json").is_file():
        raise UserError(f"{run} is not a finished run (no report.json)")
    try:
        method = json.loads((run / "report.json").read_text()).get("method")
    except (OSError, ValueError) as e:
        raise UserError(f"{run}/report.json is unreadable ({e})") from None
    if str(method).startswith("reference-"):
        raise UserError(f"{run} is a classical reference run ({method}): it has no model or firmware to "
                        "report on; its figures are in its report.json and in the compare table")
    out = Path(out) if out else run / "report.html"
    if out.is_dir():
        raise UserError(f"--out {out} is a directory; give the HTML file's name")
    try:
        page = render_report(run).encode()
    except (OSError, ValueError, KeyError) as e:       # a damaged run directory
        raise UserError(f"cannot read run {run}: {type(e).__name__}: {e}") from None
    try:
        _write_whole(out, page)
    except OSError as e:
        where = f" ({e.filename})" if e.filename and str(e.filename) != str(out) else ""
        raise UserError(f"cannot write the report to {out}: {e.strerror or e}{where}") from None
    return out
