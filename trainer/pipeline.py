"""One harness for every method: Fed-Meta-Align, FedAvg, FedProx (each with or without Phase-3
personalization) and the local-only / centralized references, all from the same data splits and,
for the federated methods, the same Phase-0 start.

A run is a list of named steps (``phase0``, ``phase1``, ``round01``.., ``dev00``.., ``central``);
after each step the working weights and the metrics-line count are checkpointed under
``RUN/state/``. ``--resume`` skips the finished steps; since every random choice is keyed by
(seed, step, device) and TF ops are deterministic, a resumed run ends with the same numbers as an
uninterrupted one.
"""
from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import aggregation as agg
from .config import FEDERATED, TrainConfig
from .data import load_fleet
from .data.fleet import DataError, Fleet, Pool
from .model import ModelSpec
from .rundir import (Metrics, atomic_savez, atomic_write_bytes, atomic_write_json, device_dir,
                     load_weights, save_weights)
from .splits import DeviceSplits, check_device, split_device
from .threshold import decide, dequantize, tune_threshold

PHASE_KEYS = {"phase0": 0, "phase1": 1, "phase2": 2, "phase3": 3, "local": 4, "central": 5}


class RunError(DataError):
    """A run directory that cannot be used as asked (exit code 2 in the CLI)."""


class Reporter:
    """Progress sink; the CLI passes a rich-based one, tests the silent default."""

    def start(self, label: str, total: int) -> None: ...
    def advance(self, n: int = 1) -> None: ...
    def finish(self) -> None: ...
    def note(self, text: str) -> None: ...


TRAINING_STREAM = 1   # second word of every training key; the data generators use other words


def key(seed: int, phase: str, *parts: int) -> list[int]:
    """Seed sequence for one local training: [seed, TRAINING_STREAM, phase id + 1, part + 1, ...].
    Every word after the seed is >= 1 because NumPy's SeedSequence ignores trailing zeros
    ([s, 0] is the same stream as [s]), which would let unrelated streams coincide."""
    return [int(seed), TRAINING_STREAM, PHASE_KEYS[phase] + 1, *[int(p) + 1 for p in parts]]


@dataclass
class Prepared:
    fleet: Fleet
    spec: ModelSpec
    splits: list[DeviceSplits]


def prepare(cfg: TrainConfig) -> Prepared:
    """Load or generate the fleet, scale inputs to model units x_m = clip(x / channel_scale, -1, 1),
    validate and split every device (``dataprep.prepare_data``: a too-little-data error names the
    option values that would work)."""
    from .dataprep import prepare_data

    fleet, splits = prepare_data(cfg)
    spec = ModelSpec(fleet.input_shape, fleet.n_classes)
    return Prepared(fleet, spec, splits)


def steps_for(cfg: TrainConfig) -> list[str]:
    devs = [f"dev{i:02d}" for i in range(cfg.devices)]
    if cfg.method == "local":
        return devs
    if cfg.method == "centralized":
        return ["central"] + devs
    out = ["phase0"]
    if cfg.method == "fedmetaalign" and not cfg.skip_phase1 and cfg.tours > 0:
        out.append("phase1")
    out += [f"round{r:02d}" for r in range(1, cfg.rounds + 1)]
    return out + devs


class Run:
    """A run directory plus the state needed to execute or resume its steps."""

    def __init__(self, cfg: TrainConfig, out: Path, resume: bool = False, reporter: Reporter | None = None):
        self.cfg = cfg
        self.out = Path(out)
        self.rep = reporter or Reporter()
        self.state = self.out / "state"
        self._open(resume)
        self.metrics = Metrics(self.out / "metrics.jsonl")
        self.metrics.truncate(self.progress["metrics_lines"])

    # --- run directory ---------------------------------------------------------------------
    def _open(self, resume: bool) -> None:
        cfg_path = self.out / "config.json"
        prog_path = self.state / "progress.json"
        if cfg_path.exists():
            try:
                old = json.loads(cfg_path.read_text())
            except (OSError, json.JSONDecodeError) as e:
                raise RunError(f"{cfg_path} is unreadable ({e}); choose another --out") from None
            if old != self.cfg.to_dict():
                diff = sorted(k for k in set(old) | set(self.cfg.to_dict()) if old.get(k) != self.cfg.to_dict().get(k))
                raise RunError(f"run directory {self.out} already holds a different config "
                               f"(differs in: {', '.join(diff)}); choose another --out")
            if not resume:
                raise RunError(f"run directory {self.out} already holds this run; "
                               "add --resume to continue it or choose another --out")
        elif resume and self.out.exists() and any(self.out.iterdir()):
            raise RunError(f"{self.out} holds no fedtiny run to resume (no config.json)")
        self.out.mkdir(parents=True, exist_ok=True)
        atomic_write_json(cfg_path, self.cfg.to_dict())
        if prog_path.exists():
            self.progress = json.loads(prog_path.read_text())
        else:
            self.progress = {"done": [], "metrics_lines": 0, "weights": None, "timings": {}}

    def _checkpoint(self, step: str, weights, seconds: float) -> None:
        old = self.progress.get("weights")
        if weights is not None:
            name = f"weights-{step}.npz"
            save_weights(self.state / name, weights)
            self.progress["weights"] = name
        self.progress["done"].append(step)
        self.progress["metrics_lines"] = self.metrics.lines
        self.progress["timings"][step] = round(seconds, 3)
        atomic_write_json(self.state / "progress.json", self.progress)
        if weights is not None and old and old != self.progress["weights"]:
            (self.state / old).unlink(missing_ok=True)

    # --- execution -------------------------------------------------------------------------
    def execute(self, until: str | None = None) -> dict | None:
        """Run the remaining steps; with ``until`` stop after that step (no report; continue later
        with resume). Returns the report dict, or None when stopped early."""
        cfg = self.cfg
        self.rep.note("preparing data")
        self.data = prepare(cfg)
        if self.data.fleet.info.get("skipped"):
            self.rep.note(self.data.fleet.info["skipped"])
        from .engine import Engine
        from .quantize import Converter

        self.engine = Engine(self.data.spec, cfg.seed, cfg.lr, cfg.head_lr, cfg.batch_size)
        weights = (load_weights(self.state / self.progress["weights"]) if self.progress["weights"]
                   else self.engine.init_weights)
        self.global_weights = [np.array(w) for w in weights]
        todo = [s for s in steps_for(cfg) if s not in self.progress["done"]]
        if until is not None:
            if until not in steps_for(cfg):
                raise RunError(f"this run has no step {until!r}")
            todo = [s for s in todo if steps_for(cfg).index(s) <= steps_for(cfg).index(until)]
        groups = _group_steps(todo)
        with Converter() as self.converter:
            for label, steps in groups:
                self.rep.start(label, len(steps))
                for step in steps:
                    t0 = time.perf_counter()
                    changed = self._run_step(step)
                    self._checkpoint(step, self.global_weights if changed else None, time.perf_counter() - t0)
                    self.rep.advance()
                    if os.environ.get("FEDTINY_CRASH_AFTER") == step:   # tests: die like a kill -9
                        os._exit(137)
                self.rep.finish()
        if until is not None:
            return None
        report = self._report()
        atomic_write_json(self.out / "report.json", report)
        return report

    def _run_step(self, step: str) -> bool:
        """Run one step; True when it changed the working (global) weights."""
        if step == "phase0":
            self._phase0()
        elif step == "phase1":
            self._phase1()
        elif step.startswith("round"):
            self._round(int(step[5:]))
        elif step == "central":
            self._central()
        elif step.startswith("dev"):
            self._device(int(step[3:]))
            return False
        return True

    def _phase0(self) -> None:
        pub = self.data.fleet.public
        e = self.engine
        e.set_weights(self.global_weights)
        loss = e.fit(pub.x, pub.y, self.cfg.phase0_epochs, key(self.cfg.seed, "phase0"))
        self.global_weights = e.get_weights()
        _, acc = e.evaluate(pub.x, pub.y)
        self.metrics.log({"phase": "phase0", "epochs": self.cfg.phase0_epochs, "loss": loss, "public_acc": acc})

    def _phase1(self) -> None:
        """Serial tour: carry one model through the devices, a few epochs on each Phase-1 share."""
        cfg, e = self.cfg, self.engine
        e.set_weights(self.global_weights)

        def visit(tour: int, visit_no: int, dev: int) -> None:
            s = self.data.splits[dev].phase1
            loss = e.fit(s.x, s.y, cfg.phase1_epochs, key(cfg.seed, "phase1", tour, dev)) if len(s) else float("nan")
            self.metrics.log({"phase": "phase1", "tour": tour, "visit": visit_no, "device": dev, "loss": loss})

        run_tours(cfg.devices, cfg.tours, cfg.tour, cfg.seed, visit)
        self.global_weights = e.get_weights()

    def _local_round(self, r: int):
        """Every device trains from the global weights on its Phase-2 share."""
        cfg, e = self.cfg, self.engine
        mu = cfg.mu if cfg.method == "fedprox" else 0.0
        client_w, perf, val_acc, n = [], [], [], []
        for i, s in enumerate(self.data.splits):
            e.set_weights(self.global_weights)
            before = e.evaluate(s.phase2_val.x, s.phase2_val.y)[0] if cfg.perf == "loss_improvement" else None
            e.fit(s.phase2_train.x, s.phase2_train.y, cfg.local_epochs, key(cfg.seed, "phase2", r, i),
                  mu=mu, anchor=self.global_weights)
            after, acc = e.evaluate(s.phase2_val.x, s.phase2_val.y)
            client_w.append(e.get_weights())
            val_acc.append(acc)
            perf.append(acc if cfg.perf == "accuracy" else max(before - after, 0.0) / max(before, 1e-12))
            n.append(len(s.phase2_train))
        return client_w, np.asarray(perf, dtype=np.float64), val_acc, n

    def _round(self, r: int) -> None:
        cfg = self.cfg
        client_w, perf, val_acc, n = self._local_round(r)
        rec = {"phase": "phase2", "round": r, "method": cfg.method, "local_val_acc": val_acc,
               "n_samples": n}
        if cfg.method == "fedmetaalign":
            d = agg.client_deltas(client_w, self.global_weights)
            aw = agg.align_weights(d, perf, cfg.floor)
            self.global_weights = agg.apply_weighted_update(self.global_weights, d, aw.w, cfg.server_lr)
            rec.update(weights=aw.w.tolist(), cos=aw.cos.tolist(), perf=aw.p.tolist())
        else:
            self.global_weights = agg.fedavg(client_w, n)
            rec.update(weights=(np.asarray(n) / np.sum(n)).tolist())
        accs = self._global_val_acc()
        rec.update(global_val_acc=float(np.mean(accs)), global_val_acc_per_device=accs)
        self.metrics.log(rec)

    def _global_val_acc(self) -> list[float]:
        self.engine.set_weights(self.global_weights)
        return [self.engine.evaluate(s.phase2_val.x, s.phase2_val.y)[1] for s in self.data.splits]

    def _central(self) -> None:
        """Centralized reference: one model on the pooled non-test windows of every device."""
        pools = [s.train_all() for s in self.data.splits]
        x = np.concatenate([p.x for p in pools])
        y = np.concatenate([p.y for p in pools])
        e = self.engine
        e.set_weights(self.engine.init_weights)
        loss = e.fit(x, y, self.cfg.reference_epochs, key(self.cfg.seed, "central"))
        self.global_weights = e.get_weights()
        self.metrics.log({"phase": "central", "epochs": self.cfg.reference_epochs, "loss": loss, "n": int(len(y))})

    # --- per device: Phase 3 and artifacts ---------------------------------------------------
    def _device(self, dev: int) -> None:
        cfg, e, s = self.cfg, self.engine, self.data.splits[dev]
        rec = {"phase": "phase3", "device": dev}
        if cfg.method == "local":
            tr = s.train_all()
            e.set_weights(e.init_weights)
            rec["loss"] = e.fit(tr.x, tr.y, cfg.reference_epochs, key(cfg.seed, "local", dev))
        else:
            e.set_weights(self.global_weights)
        threshold = cfg.default_threshold
        if cfg.method in FEDERATED and cfg.personalize:
            fx_before = [w.copy() for w in e.get_weights()[:e.n_fx]]
            rec["loss"] = e.fit(s.phase3_tune.x, s.phase3_tune.y, cfg.phase3_epochs,
                                key(cfg.seed, "phase3", dev), head_only=True)
            if not all(np.array_equal(a, b) for a, b in zip(fx_before, e.get_weights()[:e.n_fx])):
                raise RuntimeError("Phase 3 changed the frozen feature extractor")
            threshold, value = tune_threshold(e.predict(s.phase3_val.x), s.phase3_val.y, cfg.threshold_metric)
            rec.update(threshold_metric=cfg.threshold_metric, threshold_metric_value=value)
        weights = e.get_weights()
        info = self._finalize(dev, weights, threshold, s)
        rec.update(threshold=threshold, float_acc=info["float_acc"], int8_acc=info["int8_acc"])
        self.metrics.log(rec)

    def _finalize(self, dev: int, weights, threshold: float, s: DeviceSplits) -> dict:
        """Convert to INT8, evaluate float and INT8 (tflite-micro) on the test split, write artifacts."""
        from .quantize import quant_params, quantize_input
        from .tflm import arena_bytes, run_int8

        cfg, e = self.cfg, self.engine
        rep_pool = np.concatenate([s.phase2_train.x, s.phase3_tune.x, s.phase1.x])
        rng = np.random.default_rng(key(cfg.seed, "phase3", dev, 1))
        rep_x = rep_pool[np.sort(rng.permutation(len(rep_pool))[:cfg.rep_samples])]
        tfl = self.converter.convert(self.data.spec, weights, rep_x)
        q = quant_params(tfl)
        float_pred = decide(e.predict(s.test.x), threshold)
        x_int8 = quantize_input(s.test.x, q["input_scale"], q["input_zero_point"])
        out = run_int8(tfl, x_int8)
        int8_pred = decide(dequantize(out, q["output_scale"], q["output_zero_point"]), threshold)
        ddir = device_dir(self.out, dev)
        ddir.mkdir(parents=True, exist_ok=True)
        e.set_weights(weights)
        tmp = ddir / ".model_float.tmp.keras"
        e.model.save(tmp)
        tmp.replace(ddir / "model_float.keras")
        atomic_write_bytes(ddir / "model_int8.tflite", tfl)
        atomic_savez(ddir / "test_split.npz", x=s.test.x, y=s.test.y, x_int8=x_int8, pred_int8=int8_pred)
        info = {
            "device": dev, "threshold": float(threshold),
            "class_names": self.data.fleet.class_names,
            "channel_names": self.data.fleet.channel_names,
            "input_shape": list(self.data.spec.input_shape),
            "channel_scale": [float(v) for v in self.data.fleet.channel_scale],
            **q,
            "float_acc": float(np.mean(float_pred == s.test.y)),
            "int8_acc": float(np.mean(int8_pred == s.test.y)),
            "n_test": int(len(s.test)),
            "model_bytes": len(tfl),
            "arena_bytes": arena_bytes(tfl),
            "model_sha256": hashlib.sha256(tfl).hexdigest(),
            "condition": self.data.fleet.devices[dev].condition,
            "class_counts": np.bincount(self.data.fleet.devices[dev].y, minlength=self.data.fleet.n_classes).tolist(),
        }
        atomic_write_json(ddir / "device.json", info)
        return info

    def _report(self) -> dict:
        devs = []
        for i in range(self.cfg.devices):
            d = json.loads((device_dir(self.out, i) / "device.json").read_text())
            devs.append({k: d[k] for k in ("device", "float_acc", "int8_acc", "threshold", "n_test",
                                           "model_bytes", "arena_bytes", "model_sha256")})
        fa = [d["float_acc"] for d in devs]
        ia = [d["int8_acc"] for d in devs]
        return {
            "run": self.out.name, "dataset": self.cfg.dataset, "method": self.cfg.method,
            "personalize": self.cfg.personalize if self.cfg.method in FEDERATED else False,
            "seed": self.cfg.seed, "class_names": self.data.fleet.class_names,
            "devices": devs,
            "summary": {"mean_float_acc": float(np.mean(fa)), "mean_int8_acc": float(np.mean(ia)),
                        "max_int8_drop_pp": float(100 * np.max(np.subtract(fa, ia))),
                        "max_model_bytes": max(d["model_bytes"] for d in devs),
                        "max_arena_bytes": max(d["arena_bytes"] for d in devs)},
            "timings_s": self.progress["timings"],
        }


def run_tours(n_devices: int, tours: int, policy: str, seed: int, visit) -> list[list[int]]:
    """Phase-1 schedule: for each tour, call visit(tour, visit_no, device) in ``tour_order``."""
    done = []
    for t in range(tours):
        order = agg.tour_order(n_devices, policy, t, seed)
        for v, dev in enumerate(order):
            visit(t, v, dev)
        done.append(order)
    return done


def _group_steps(steps: list[str]) -> list[tuple[str, list[str]]]:
    """Group consecutive steps for progress bars: Phase 0, Phase 1, Phase 2 rounds, devices."""
    label_of = {"phase0": "Phase 0 pretrain (public pool)", "phase1": "Phase 1 meta-init tour",
                "central": "Centralized reference"}
    out: list[tuple[str, list[str]]] = []
    for s in steps:
        label = label_of.get(s) or ("Phase 2 rounds" if s.startswith("round") else "Phase 3 + INT8 per device")
        if out and out[-1][0] == label:
            out[-1][1].append(s)
        else:
            out.append((label, [s]))
    return out


def train(cfg: TrainConfig, out: Path, resume: bool = False, reporter: Reporter | None = None,
          until: str | None = None) -> dict | None:
    """Run (or resume) one training run into ``out``; returns the report dict (None with ``until``)."""
    return Run(cfg, out, resume, reporter).execute(until)


def load_or_train(cfg: TrainConfig, out: Path, reporter: Reporter | None = None) -> dict:
    """The finished run's report when ``out`` already holds this config and a report; otherwise
    train (resuming whatever part was done). Used by compare/ablate/demo so no work is redone."""
    out = Path(out)
    if (out / "report.json").exists() and (out / "config.json").exists():
        if json.loads((out / "config.json").read_text()) == cfg.to_dict():
            return json.loads((out / "report.json").read_text())
    return train(cfg, out, resume=(out / "config.json").exists(), reporter=reporter)
