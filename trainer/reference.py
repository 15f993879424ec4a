"""The classical reference of every comparison: a scikit-learn random forest on per-channel
time-domain features, over the same splits as the networks (``--method reference-local`` /
``reference-central``).

Features (``window_features``): the ``features`` front end (``fedtiny.frontend``, the one the
firmware computes too): per channel mean, std, RMS, peak, crest factor and kurtosis of the window,
in the front end's integer / log2 form, 6 values per channel, channel-major. It is computed on the
raw windows whatever ``--frontend`` the run names (the splits are the same).
``reference-local``: one forest per device on every window it may train on (``train_all``: all
shares but test); ``reference-central``: one forest on the pooled ``train_all`` of every device.
Each is evaluated on every device's test split with the trainer's decision rule at the default
threshold (``threshold.decide`` on the forest's class probabilities), so accuracy, false-alarm and
detection rates mean what they mean for the networks. There is no INT8 model: the report's
``float_acc`` and ``int8_acc`` are both the forest's accuracy. Forests: 100 trees, seeded by
(run seed, device), one job, so the same seed gives the same numbers.
"""
from __future__ import annotations

import json
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from .config import TrainConfig
from .data.fleet import DataError
from .rundir import atomic_write_bytes, atomic_write_json
from .threshold import decide, detection_rates

REFERENCE_STREAM = 11      # second word of the forests' seeds (the training keys use 1)
N_TREES = 100


def window_features(x: np.ndarray) -> np.ndarray:
    """(n, 6 C) features of windows ``x`` (n, T, C) in model units: ``frontend.compute("features")``."""
    from fedtiny import frontend

    return frontend.compute("features", np.asarray(x, dtype=np.float32))


def forest_probs(train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray, n_classes: int,
                 seed: list[int]) -> np.ndarray:
    """(n_test, n_classes) class probabilities of a seeded random forest trained on the features of
    ``train_x``; classes absent from the training labels get probability 0."""
    try:
        from sklearn.ensemble import RandomForestClassifier
    except ImportError:
        raise DataError("the reference-local / reference-central variants need scikit-learn: "
                        "pip install 'fedtiny[experiments]'") from None

    rs = int(np.random.default_rng(seed).integers(0, 2**31 - 1))
    rf = RandomForestClassifier(n_estimators=N_TREES, random_state=rs, n_jobs=1)
    rf.fit(window_features(train_x), train_y)
    out = np.zeros((len(test_x), n_classes))
    if len(test_x):
        out[:, rf.classes_] = rf.predict_proba(window_features(test_x))
    return out


def train_reference(cfg: TrainConfig, out: Path, reporter=None) -> dict:
    """Fit and evaluate the reference of ``cfg.method`` into run directory ``out`` (config.json,
    metrics.jsonl, devices/devNN/device.json, report.json); returns the report."""
    from .pipeline import check_writable, fleet_rates, prepare
    from .rundir import device_dir

    check_writable(out)
    t0 = time.perf_counter()
    data = prepare(replace(cfg, frontend="raw"), reporter)      # features of the raw windows
    names = list(data.fleet.class_names)
    k = len(names)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / "config.json", cfg.to_dict())
    central = None
    if cfg.method == "reference-central":
        pools = [s.train_all() for s in data.splits]
        central = (np.concatenate([p.x for p in pools]), np.concatenate([p.y for p in pools]))
    devs, counts, lines = [], [], []
    for i, s in enumerate(data.splits):
        tr = central or (s.train_all().x, s.train_all().y)
        probs = forest_probs(tr[0], tr[1], s.test.x, k, [cfg.seed, REFERENCE_STREAM, i + 1])
        pred = decide(probs, cfg.default_threshold)
        r = detection_rates(s.test.y, pred)
        acc = float(np.mean(pred == s.test.y)) if len(pred) else 0.0
        info = {"device": i, "model": f"random forest ({N_TREES} trees) on {window_features(s.test.x[:1]).shape[1]} "
                                      "time-domain features",
                "float_acc": acc, "int8_acc": acc, "int8_far": r["far"], "int8_dr": r["dr"],
                "float_far": r["far"], "float_dr": r["dr"], "threshold": float(cfg.default_threshold),
                "threshold_origin": "default", "n_test": int(len(s.test)),
                "test_class_counts": np.bincount(s.test.y, minlength=k).tolist(),
                "class_counts": np.bincount(data.fleet.devices[i].y, minlength=k).tolist(),
                "int8_counts": {c: r[c] for c in ("n_normal", "n_fault", "false_alarms", "detections", "correct")}}
        atomic_write_json(device_dir(out, i) / "device.json", info)
        counts.append(info.pop("int8_counts"))
        info.pop("class_counts")
        devs.append(info)
        lines.append({"phase": "reference", "device": i, "acc": acc, "far": r["far"], "dr": r["dr"]})
    atomic_write_bytes(out / "metrics.jsonl", "".join(json.dumps(x) + "\n" for x in lines).encode())
    acc = [d["int8_acc"] for d in devs]
    report = {"run": out.name, "dataset": cfg.dataset, "method": cfg.method, "personalize": False,
              "seed": cfg.seed, "class_names": names, "devices": devs,
              "summary": {"mean_float_acc": float(np.mean(acc)), "mean_int8_acc": float(np.mean(acc)),
                          **fleet_rates(counts),
                          "threshold_origins": {"local": 0, "fleet": 0, "default": len(devs)}},
              "note": "classical reference: no INT8 model; float_acc and int8_acc are the forest's accuracy",
              "warnings": [], "timings_s": {"reference": round(time.perf_counter() - t0, 3)}}
    atomic_write_json(out / "report.json", report)
    return report
