"""The site step: what runs where one device's data lives.

A ``SiteClient`` holds one device's splits (``SiteData``), a TF ``Engine`` (shared by all sites of
one process in the in-process backend; one per site process in Flower) and the folder of its
local run copy. It answers three requests, each given weights and a config dict:

- ``fit(weights, config)`` with ``config["phase"]``:
  ``phase1`` (``tour``, ``epochs``): train the Phase-1 share, key (seed, phase1, tour, device);
  ``phase2`` (``round``, ``epochs``, ``mu``): train the Phase-2 share from the sent weights,
  key (seed, phase2, round, device), FedProx term anchored at the sent weights when mu > 0.
  Returns the trained weights and metrics: ``n`` (training windows), ``train_loss`` (mean CE of
  the last epoch; absent when the share is empty), and for phase2 ``loss_before``, ``loss_after``,
  ``acc_before``, ``acc`` (CE and accuracy of the sent / trained weights on the Phase-2
  validation windows; ``acc`` is p_k under ``--perf accuracy``) and ``val_groups`` (the number of
  groups in those windows: the evidence behind p_k).
- ``evaluate(weights, config)``: ``loss``, ``acc`` on the Phase-2 validation windows; with
  ``config["phase"] == "scores"`` instead ``hist``: the (2, 256) per-side histogram of the scores
  1 - P(normal) of the sent weights on the threshold-validation windows
  (``fleet_threshold.score_histogram``; counts only, no window), for the fleet threshold.
- ``finalize(weights, config)`` (Phase 3): fine-tune the head (federated methods with
  personalization) or train a local model (method ``local``), convert to INT8, tune the
  threshold on the INT8 model's scores of the threshold-validation windows (``threshold_origin``
  "local"; when that split holds one side only, or without personalization, the server's
  ``config["fleet_threshold"]`` is used: "fleet"; without either, ``default_threshold``:
  "default"), evaluate float and INT8 on the test split (accuracy, false-alarm and detection rates), and write the device's artifacts into the local run copy
  (``devices/devNN/``: model_float.keras, model_int8.tflite, device.json, test_split.npz).
  Returns the artifacts a server may store: ``model_int8`` and ``model_float`` (bytes),
  ``device_json`` and ``record`` (the metrics line) as dicts. ``test_split.npz`` (raw test
  windows) is never returned: it stays with the site.

Every random choice is keyed by (run seed, phase, round/tour, device), so a request gives the same
answer in any process on any backend.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .config import FEDERATED, TrainConfig
from .model import ModelSpec
from .rundir import atomic_savez, atomic_write_bytes, atomic_write_json, device_dir, device_label
from .splits import DeviceSplits
from .threshold import decide, dequantize, detection_rates, tune_threshold


@dataclass
class SiteData:
    """Everything one site holds: its splits and the facts its device.json records."""

    device: int
    splits: DeviceSplits
    spec: ModelSpec
    class_names: list[str]
    channel_names: list[str]
    channel_scale: list[float]
    condition: dict
    class_counts: list[int]
    frontend: dict | None = None     # fedtiny.frontend.describe(...) of the run (None: raw windows)

    @classmethod
    def from_prepared(cls, prepared, device: int) -> "SiteData":
        """Device ``device``'s share of a ``pipeline.Prepared`` (fleet + splits)."""
        fleet = prepared.fleet
        pool = fleet.devices[device]
        return cls(device=device, splits=prepared.splits[device], spec=prepared.spec,
                   class_names=list(fleet.class_names), channel_names=list(fleet.channel_names),
                   channel_scale=[float(v) for v in fleet.channel_scale], condition=pool.condition,
                   class_counts=np.bincount(pool.y, minlength=fleet.n_classes).tolist(),
                   frontend=fleet.info.get("frontend"))


class SiteClient:
    """One device's site step (module doc)."""

    def __init__(self, cfg: TrainConfig, data: SiteData, engine, out: Path):
        self.cfg, self.data, self.engine, self.out = cfg, data, engine, Path(out)

    @property
    def device(self) -> int:
        return self.data.device

    def _key(self, phase: str, *parts: int) -> list[int]:
        from .pipeline import key

        return key(self.cfg.seed, phase, *parts)

    # --- fit / evaluate ----------------------------------------------------------------------
    def fit(self, weights, config: dict) -> tuple[list[np.ndarray], dict]:
        e, s, dev = self.engine, self.data.splits, self.device
        phase = config["phase"]
        e.set_weights(weights)
        if phase == "phase1":
            share = s.phase1
            out = {"n": int(len(share))}
            if len(share):
                out["train_loss"] = e.fit(share.x, share.y, int(config["epochs"]),
                                          self._key("phase1", int(config["tour"]), dev))
            return e.get_weights(), out
        if phase != "phase2":
            raise ValueError(f"unknown fit phase {phase!r}")
        tr, va = s.phase2_train, s.phase2_val
        before, acc_before = e.evaluate(va.x, va.y)
        loss = e.fit(tr.x, tr.y, int(config["epochs"]), self._key("phase2", int(config["round"]), dev),
                     mu=float(config.get("mu", 0.0)), anchor=weights)
        after, acc = e.evaluate(va.x, va.y)
        return e.get_weights(), {"n": int(len(tr)), "train_loss": loss, "loss_before": before,
                                 "acc_before": acc_before, "loss_after": after, "acc": acc,
                                 "val_groups": int(len(np.unique(va.groups)))}

    def evaluate(self, weights, config: dict | None = None) -> dict:
        if (config or {}).get("phase") == "scores":
            from .fleet_threshold import score_histogram

            va = self.data.splits.phase3_val
            self.engine.set_weights(weights)
            probs = self.engine.predict(va.x) if len(va) else np.zeros((0, self.data.spec.n_classes))
            return {"hist": score_histogram(1.0 - probs[:, 0], va.y).tolist(), "n": int(len(va))}
        va = self.data.splits.phase2_val
        self.engine.set_weights(weights)
        loss, acc = self.engine.evaluate(va.x, va.y)
        return {"loss": loss, "acc": acc, "n": int(len(va))}

    # --- Phase 3 ------------------------------------------------------------------------------
    def finalize(self, weights, config: dict | None = None, converter=None, tuned=None) -> dict:
        """``tuned`` (optional): (weights, loss) of this device's Phase-3 local training already
        done elsewhere (the vectorized backend trains a block of devices at once); otherwise the
        engine trains here."""
        from .pipeline import missing_test_classes, one_sided

        cfg, e, s, dev = self.cfg, self.engine, self.data.splits, self.device
        rec = {"phase": "phase3", "device": dev}
        if cfg.method == "local":
            tr = s.train_all()
            if tuned is not None:
                e.set_weights(tuned[0])
                rec["loss"] = tuned[1]
            else:
                e.set_weights(e.init_weights)
                rec["loss"] = e.fit(tr.x, tr.y, cfg.reference_epochs, self._key("local", dev))
        else:
            e.set_weights(weights)
        threshold = cfg.default_threshold
        fleet_t = (config or {}).get("fleet_threshold")
        origin = "default"
        tune = None           # the split the threshold is tuned on (on the INT8 model's scores)
        warnings = []
        if cfg.method in FEDERATED and not cfg.personalize and fleet_t is not None:
            threshold, origin = float(fleet_t), "fleet"
        if cfg.method in FEDERATED and cfg.personalize:
            fx_before = [w.copy() for w in e.get_weights()[:e.n_fx]]
            if tuned is not None:
                e.set_weights(tuned[0])
                rec["loss"] = tuned[1]
            else:
                rec["loss"] = e.fit(s.phase3_tune.x, s.phase3_tune.y, cfg.phase3_epochs,
                                    self._key("phase3", dev), head_only=True)
            if not all(np.array_equal(a, b) for a, b in zip(fx_before, e.get_weights()[:e.n_fx])):
                raise RuntimeError("Phase 3 changed the frozen feature extractor")
            side = one_sided(s.phase3_val.y)
            if side and fleet_t is not None:
                threshold, origin = float(fleet_t), "fleet"
                warnings.append(f"device {dev}: its threshold-validation split holds only {side} windows "
                                f"({len(s.phase3_val)}); it uses the fleet threshold {threshold:.4f}")
            elif side:
                warnings.append(f"device {dev}: its threshold-validation split holds only {side} windows "
                                f"({len(s.phase3_val)}) and no fleet threshold was sent; the threshold stays "
                                f"at the default {cfg.default_threshold:g}")
            else:
                tune, origin = s.phase3_val, "local"
        final = e.get_weights()
        names = self.data.class_names
        missing = missing_test_classes(s.train_all().y, s.test.y)
        if missing:
            warnings.append(f"device {dev}: its test split holds no {', '.join(names[k] for k in missing)} "
                            f"window although it trains on them; its accuracy says nothing about "
                            f"{'that class' if len(missing) == 1 else 'those classes'}")
        art = self._artifacts(final, threshold, warnings, converter, tune=tune, origin=origin)
        info = art["device_json"]
        if tune is not None:
            rec.update(threshold_metric=cfg.threshold_metric, threshold_metric_value=info["threshold_metric_value"])
        rec.update(threshold=info["threshold"], threshold_origin=origin, float_acc=info["float_acc"],
                   int8_acc=info["int8_acc"], int8_far=info["int8_far"], int8_dr=info["int8_dr"])
        art["record"] = rec
        return art

    def representative_set(self) -> np.ndarray:
        """The INT8 calibration windows: ``rep_samples`` of the device's training windows (Phase 2
        train, Phase 3 fine-tune, Phase 1), chosen with key (seed, phase3, device, 1)."""
        from .pipeline import key

        s = self.data.splits
        rep_pool = np.concatenate([s.phase2_train.x, s.phase3_tune.x, s.phase1.x])
        rng = np.random.default_rng(key(self.cfg.seed, "phase3", self.device, 1))
        return rep_pool[np.sort(rng.permutation(len(rep_pool))[:self.cfg.rep_samples])]

    def _artifacts(self, weights, threshold: float, warnings: list[str], converter=None, tune=None,
                   origin: str = "default") -> dict:
        """Convert to INT8, tune the threshold when ``tune`` (a split) is given, evaluate float and
        INT8 (tflite-micro) on the test split, write the artifacts.

        The threshold is tuned on the INT8 model's dequantized scores of ``tune``, the scores the
        board decides on: the INT8 output has a resolution of ``output_scale`` (1/256 for the
        softmax), and a threshold tuned on float scores can fall between two of its steps, below the
        smallest score the board can give (then every window is a fault on the board) or above the
        largest; measured at 1,000 devices, such a float-tuned threshold cost two devices 47 and 77
        points of INT8 accuracy. The float model's accuracy is reported with its own threshold,
        tuned the same way on its float scores (``float_threshold``), so that float vs INT8 compares
        each model at its best threshold, not the float model at a threshold fitted to 1/256 steps.

        ``test_split.npz`` carries the host's raw int8 output scores (``out_int8``) beside its
        decisions (and, with a front end, the int16 samples of each test window, ``raw_int16``), so the bench can tell a borderline disagreement from a real one
        without running the model; ``device.json`` records how dense layers were quantized
        (``dense_quantization``), where its threshold came from (``threshold_origin``: local /
        fleet / default) and, per model, the test split's false-alarm and detection rates
        (``threshold.detection_rates``: ``int8_far``, ``int8_dr``, ``float_far``, ``float_dr``, and the
        INT8 counts in ``int8_counts``)."""
        from .quantize import DENSE_QUANTIZATION, Converter, quant_params, quantize_input
        from .tflm import arena_bytes, run_int8

        e, s, d, dev = self.engine, self.data.splits, self.data, self.device
        rep_x = self.representative_set()
        tfl = (converter or Converter()).convert(d.spec, weights, rep_x)
        q = quant_params(tfl)
        metric_value = None
        float_threshold = threshold
        if tune is not None:
            out_val = run_int8(tfl, quantize_input(tune.x, q["input_scale"], q["input_zero_point"]))
            threshold, metric_value = tune_threshold(dequantize(out_val, q["output_scale"], q["output_zero_point"]),
                                                     tune.y, self.cfg.threshold_metric)
            float_threshold, _ = tune_threshold(e.predict(tune.x), tune.y, self.cfg.threshold_metric)
        float_pred = decide(e.predict(s.test.x), float_threshold)
        x_int8 = quantize_input(s.test.x, q["input_scale"], q["input_zero_point"])
        out = run_int8(tfl, x_int8)
        int8_pred = decide(dequantize(out, q["output_scale"], q["output_zero_point"]), threshold)
        rates_i, rates_f = detection_rates(s.test.y, int8_pred), detection_rates(s.test.y, float_pred)
        ddir = device_dir(self.out, dev, self.cfg.device_names)
        ddir.mkdir(parents=True, exist_ok=True)
        e.set_weights(weights)
        tmp = ddir / ".model_float.tmp.keras"
        e.model.save(tmp)
        tmp.replace(ddir / "model_float.keras")
        atomic_write_bytes(ddir / "model_int8.tflite", tfl)
        extra = {} if s.test.raw is None else {"raw_int16": s.test.raw}
        atomic_savez(ddir / "test_split.npz", x=s.test.x, y=s.test.y, x_int8=x_int8, pred_int8=int8_pred,
                     out_int8=out, **extra)
        info = {
            "device": dev, "name": device_label(self.cfg.device_names, dev), "threshold": float(threshold),
            "threshold_origin": origin,
            "threshold_tuned_on": "int8" if tune is not None else None,
            "threshold_metric_value": metric_value,
            "float_threshold": float(float_threshold),
            "class_names": d.class_names,
            "channel_names": d.channel_names,
            "input_shape": list(d.spec.input_shape),
            "channel_scale": d.channel_scale,
            "frontend": d.frontend or {"kind": "raw"},
            **q,
            "dense_quantization": DENSE_QUANTIZATION,
            "float_acc": float(np.mean(float_pred == s.test.y)),
            "int8_acc": float(np.mean(int8_pred == s.test.y)),
            "int8_far": rates_i["far"], "int8_dr": rates_i["dr"],
            "float_far": rates_f["far"], "float_dr": rates_f["dr"],
            "int8_counts": {k: rates_i[k] for k in ("n_normal", "n_fault", "false_alarms", "detections",
                                                    "correct")},
            "n_test": int(len(s.test)),
            "model_bytes": len(tfl),
            "arena_bytes": arena_bytes(tfl),
            "model_sha256": hashlib.sha256(tfl).hexdigest(),
            "condition": d.condition,
            "class_counts": d.class_counts,
            "test_class_counts": np.bincount(s.test.y, minlength=d.spec.n_classes).tolist(),
            "warnings": warnings,
        }
        atomic_write_json(ddir / "device.json", info)
        return {"model_int8": tfl, "model_float": (ddir / "model_float.keras").read_bytes(),
                "device_json": info}
