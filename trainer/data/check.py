"""``fedtiny data check``: what a dataset holds and what is wrong with it, without training.

A fleet folder is read through ``fleetdir`` (its only reader); a public electrical CSV and a CWRU
folder through their loaders. Per device: each class's duration and group count (time blocks of
the run's default windowing, ``fleetdir.resolve_windowing``), rates, channels, value ranges.
Problems: a device without normal data, a class on only one device, unlabelled or unreadable files,
and confounds (``confounds``): a sample rate, a channel's level or a recording length that alone
separates one class from the others, so a model could learn it instead of the fault.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .fleet import DataError


def _disjoint(a: list[float], b: list[float]) -> bool:
    return bool(a) and bool(b) and (min(a) > max(b) or max(a) < min(b))


def confounds(items: list[dict], channels: list[str]) -> list[str]:
    """Problems where one property alone separates a class. ``items``: one per labelled recording
    or segment, {"label", "rate", "length_s", "whole" (a whole-recording label), "rms": {channel:
    rms}}. A class is *separated* by the rate when no other class has a recording at any of its
    rates; by a length when its whole recordings' lengths and the other classes' do not overlap; by
    a channel's level when the ranges of its rms over its items and over the others' do not
    overlap."""
    out = []
    labels = sorted({it["label"] for it in items})
    if len(labels) < 2:
        return out
    for k in labels:
        mine = [it for it in items if it["label"] == k]
        rest = [it for it in items if it["label"] != k]
        r_mine = {it["rate"] for it in mine}
        if not r_mine & {it["rate"] for it in rest}:
            out.append(f"class {k} is recorded only at {', '.join(f'{r:g}' for r in sorted(r_mine))} Hz and no "
                       "other class is: the sample rate alone separates it (resampling hides the rate, not its "
                       "filtering or noise floor)")
        lm = [it["length_s"] for it in mine if it["whole"]]
        lr = [it["length_s"] for it in rest if it["whole"]]
        if len(lm) >= 2 and len(lr) >= 2 and _disjoint(lm, lr):
            out.append(f"class {k}: its recordings last {min(lm):g}-{max(lm):g} s, the others' "
                       f"{min(lr):g}-{max(lr):g} s: the length alone separates it")
        for c in channels:
            vm = [it["rms"][c] for it in mine if c in it["rms"]]
            vr = [it["rms"][c] for it in rest if c in it["rms"]]
            if len(vm) >= 2 and len(vr) >= 2 and _disjoint(vm, vr):
                out.append(f"class {k}: channel {c}'s rms level ({min(vm):.3g}-{max(vm):.3g}) is outside every "
                           f"other class's ({min(vr):.3g}-{max(vr):.3g}): the level alone separates it (check "
                           "that it is the fault and not a sensor's gain or mounting)")
    return out


def check_fleet(root: Path) -> tuple[list[str], list[str], bool]:
    """(summary lines, problems, usable) of a fleet folder."""
    from .blocks import block_spans
    from .fleetdir import (Geometry, cached_recording, device_names, read_labels, read_spec, resolve_windowing,
                           unit_factor)

    spec = read_spec(root)
    names = device_names(root)
    win = resolve_windowing(root)
    lines, problems, items = [], [], []
    holders: dict[str, set] = {}
    usable = False
    normal = spec.normal
    for n in names:
        folder = root / n
        try:
            segs = read_labels(folder)
        except DataError as e:
            problems.append(f"device {n}: {e}")
            continue
        files = sorted(p.name for p in folder.iterdir() if p.is_file() and p.name != "labels.csv")
        labelled = {s.file for s in segs}
        dur: dict[str, float] = {}
        groups: dict[str, int] = {}
        rates, chans, ranges = set(), [], {}
        for f in files:
            try:
                rec = cached_recording(folder / f, spec, True)
            except DataError as e:
                problems.append(f"device {n}: unreadable {f}: {e}")
                continue
            for c in rec.channels:                 # the run's units (fleet.toml [units]) or an exact conversion
                try:
                    unit_factor(rec.units.get(c), spec.units.get(c), f, c)
                except DataError as e:
                    problems.append(f"device {n}: {e}")
            rates.add(rec.rate_hz)
            chans += [c for c in rec.channels if c not in chans]
            for j, c in enumerate(rec.channels):
                lo, hi = ranges.get(c, (np.inf, -np.inf))
                ranges[c] = (min(lo, float(rec.x[:, j].min())), max(hi, float(rec.x[:, j].max())))
            if f not in labelled:
                problems.append(f"device {n}: {f} is unlabelled (no line in labels.csv): nothing trains on it")
                continue
            try:
                geo = Geometry.from_ms(rec.rate_hz, **win)
            except DataError:
                geo = None
            n_rows = len(rec.x)
            for s in (s for s in segs if s.file == f):
                a, b = (0, n_rows) if s.start_s is None else (int(round(s.start_s * rec.rate_hz)),
                                                               min(n_rows, int(round(s.end_s * rec.rate_hz))))
                if b <= a:
                    problems.append(f"device {n}: labels.csv line {s.line} lies outside {f}")
                    continue
                dur[s.label] = dur.get(s.label, 0.0) + (b - a) / rec.rate_hz
                if geo is not None:
                    groups[s.label] = groups.get(s.label, 0) + len(block_spans(a, b, geo.block, geo.guard, geo.width))
                items.append({"label": s.label, "rate": rec.rate_hz, "length_s": (b - a) / rec.rate_hz,
                              "whole": s.start_s is None,
                              "rms": {c: float(np.sqrt(np.mean(rec.x[a:b, j] ** 2))) for j, c in enumerate(rec.channels)}})
                holders.setdefault(s.label, set()).add(n)
                usable = usable or bool(groups.get(s.label))
        for s in segs:
            if s.file not in files:
                problems.append(f"device {n}: labels.csv line {s.line} names {s.file}, which is not in the folder")
        cls = ", ".join(f"{k} {dur[k]:.1f} s ({groups.get(k, 0)} groups)" for k in sorted(dur, key=lambda k: (k != normal, k)))
        rng = ", ".join(f"{c} {lo:.3g}..{hi:.3g}" for c, (lo, hi) in ranges.items())
        lines.append(f"{n}: {cls or 'no labelled data'}; {', '.join(f'{r:g}' for r in sorted(rates)) or '?'} Hz; "
                     f"channels {', '.join(chans) or 'none'}; {rng}")
        if dur and normal not in dur:
            problems.append(f"device {n} has no {normal} data: its threshold cannot be tuned against normal "
                            "running, and its test split holds no normal window")
    if spec.classes is not None:
        for k in sorted(set(holders) - set(spec.classes)):
            problems.append(f"label {k} is not in fleet.toml's classes ({', '.join(spec.classes)})")
    if len(names) > 1:
        for k, h in sorted(holders.items()):
            if len(h) == 1 and k != normal:
                problems.append(f"class {k} is on one device only ({next(iter(h))}): federation cannot share it")
    problems += confounds(items, sorted({c for it in items for c in it["rms"]}))
    head = (f"{root}: {len(names)} device(s); windowing {win['window_ms']:g} ms windows every {win['hop_ms']:g} ms "
            f"in {win['block_ms']:g} ms blocks (groups)")
    return [head] + lines, problems, usable


def check_csv(path: Path) -> tuple[list[str], list[str], bool]:
    """A public electrical CSV (one 20 kHz simulation): per class rows, duration and label runs."""
    from .electrical import CHANNELS, CLASS_NAMES, DETECT_CLASS_NAMES, FS_ACQ, label_runs, read_fault_csv

    x, y, form = read_fault_csv(path)
    names = DETECT_CLASS_NAMES if form == "detect" else CLASS_NAMES
    runs = label_runs(y)
    lines = [f"{path}: {form} form, one recording of {len(y)} rows at {FS_ACQ:g} Hz ({len(y) / FS_ACQ:.3f} s); "
             f"channels {', '.join(CHANNELS)}"]
    items = []
    for k in np.unique(y):
        rk = [(a, b) for a, b in runs if y[a] == k]
        lines.append(f"  {names[k]}: {np.sum(y == k)} rows ({np.sum(y == k) / FS_ACQ * 1000:.1f} ms) in {len(rk)} run(s)")
        items += [{"label": names[k], "rate": FS_ACQ, "length_s": (b - a) / FS_ACQ, "whole": False,
                   "rms": {c: float(np.sqrt(np.mean(x[a:b, j] ** 2))) for j, c in enumerate(CHANNELS)}} for a, b in rk]
    problems = []
    if 0 not in np.unique(y):
        problems.append("no no-fault rows")
    problems += [p for p in confounds(items, list(CHANNELS)) if "level" not in p]
    problems.append("the whole file is one simulation: its classes come from one network and one inception "
                    "each, and a device dealt from it is not a different machine")
    return lines, problems, len(np.unique(y)) >= 2


def check_cwru(folder: Path) -> tuple[list[str], list[str], bool]:
    """A CWRU folder: every usable record with its label and original rate, and what was skipped."""
    from .cwru import load_cwru

    f = load_cwru(folder, n_devices=1, public_fraction=0.0, min_device_samples=1)
    recs = f.devices[0].condition["recordings"]
    lines = [f"{folder}: {len(recs)} CWRU drive-end record(s) used, resampled to {f.sample_rate_hz:g} Hz"]
    for r in recs:
        lines.append(f"  {r['file']}: {r['label']}, {r['rate_hz']} Hz, {r['windows']} windows, rpm {r['rpm']}")
    items = [{"label": r["label"], "rate": float(r["rate_hz"]), "length_s": 0.0, "whole": False, "rms": {}}
             for r in recs]
    problems = confounds(items, [])
    if f.info.get("skipped"):
        problems.append(f.info["skipped"])
    return lines, problems, len({r["label"] for r in recs}) >= 2


def check_path(path) -> tuple[list[str], list[str], bool]:
    """(summary lines, problems, usable) of a fleet folder, a public electrical CSV or a CWRU folder."""
    from .fleetdir import is_fleet_folder

    p = Path(path)
    if p.is_file() and p.suffix.lower() == ".csv":
        return check_csv(p)
    if is_fleet_folder(p):
        return check_fleet(p)
    if p.is_dir() and any(q.suffix.lower() == ".mat" for q in p.rglob("*")):
        return check_cwru(p)
    if p.is_dir():
        return check_fleet(p)         # says what a fleet folder lacks
    raise DataError(f"{path}: give a fleet folder, a classData-format .csv or a folder of CWRU .mat files")
