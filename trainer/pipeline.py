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
from .data.fleet import DataError, Fleet
from .model import ModelSpec
from .rundir import (Metrics, atomic_savez, atomic_write_bytes, atomic_write_json, device_dir,
                     load_weights, save_weights)
from .splits import DeviceSplits
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


def prepare(cfg: TrainConfig, reporter: Reporter | None = None) -> Prepared:
    """Load or generate the fleet, scale inputs to model units x_m = clip(x / channel_scale, -1, 1),
    validate and split every device (``dataprep.prepare_data``: a too-little-data error names the
    option values that would work). Notes what the loader skipped."""
    from .dataprep import prepare_data

    rep = reporter or Reporter()
    rep.note(f"preparing data: {cfg.dataset}, {cfg.devices} device(s)")
    fleet, splits = prepare_data(cfg, on_device=rep.advance, on_start=rep.start)
    rep.finish()
    if fleet.info.get("skipped"):
        rep.note(fleet.info["skipped"])
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
        self.progress = self._check(resume)
        self.metrics: Metrics | None = None
        self._on_epoch = None

    # --- run directory ---------------------------------------------------------------------
    def _check(self, resume: bool) -> dict:
        """Decide, without writing anything, whether ``out`` may hold this run; return its progress.

        A directory with no finished step (a run that failed before its first checkpoint: bad data,
        a typo in --dataset, Ctrl-C during data preparation) holds no work and is free for any
        config. Otherwise its config must equal this one, and continuing needs --resume."""
        cfg_path = self.out / "config.json"
        prog_path = self.state / "progress.json"
        fresh = {"done": [], "metrics_lines": 0, "weights": None, "timings": {}}
        progress = fresh
        if prog_path.exists():
            try:
                progress = json.loads(prog_path.read_text())
            except (OSError, json.JSONDecodeError) as e:
                raise RunError(f"{prog_path} is unreadable ({e}); choose another --out") from None
        if cfg_path.exists():
            try:
                old = json.loads(cfg_path.read_text())
            except (OSError, json.JSONDecodeError) as e:
                raise RunError(f"{cfg_path} is unreadable ({e}); choose another --out") from None
            if not progress["done"]:
                return fresh
            if old != self.cfg.to_dict():
                diff = sorted(k for k in set(old) | set(self.cfg.to_dict()) if old.get(k) != self.cfg.to_dict().get(k))
                raise RunError(f"run directory {self.out} already holds a different config "
                               f"(differs in: {', '.join(diff)}); choose another --out")
            if not resume:
                raise RunError(f"run directory {self.out} already holds this run; "
                               "add --resume to continue it or choose another --out")
        elif self.out.exists() and not self.out.is_dir():
            raise RunError(f"--out {self.out} is a file")
        elif resume and self.out.exists() and any(self.out.iterdir()):
            raise RunError(f"{self.out} holds no fedtiny run to resume (no config.json)")
        check_writable(self.out)
        return progress

    def finished_report(self) -> dict | None:
        """The report of a run whose every step is done (None otherwise)."""
        rpath = self.out / "report.json"
        if set(steps_for(self.cfg)) <= set(self.progress["done"]) and rpath.exists():
            return json.loads(rpath.read_text())
        return None

    def _create(self) -> None:
        """Write config.json (and an empty log) once the data has been prepared without error."""
        self.out.mkdir(parents=True, exist_ok=True)
        atomic_write_json(self.out / "config.json", self.cfg.to_dict())
        self.metrics = Metrics(self.out / "metrics.jsonl")
        self.metrics.truncate(self.progress["metrics_lines"])

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
        all_steps = steps_for(cfg)
        if until is not None and until not in all_steps:
            raise RunError(f"this run has no step {until!r}")
        done = self.progress["done"]
        if done:
            nxt = next((s for s in all_steps if s not in done), None)
            self.rep.note(f"resuming {self.out} at {describe_step(nxt)} ({len(done)} of {len(all_steps)} "
                          "steps done)" if nxt else f"{self.out}: every step is done; writing the report")
        from .quantize import Converter

        Converter.warm_up()       # the conversion worker starts (imports TF) while Phases 0-2 run
        self.data = prepare(cfg, self.rep)
        self._create()
        from .engine import Engine

        self.engine = Engine(self.data.spec, cfg.seed, cfg.lr, cfg.head_lr, cfg.batch_size)
        weights = (load_weights(self.state / self.progress["weights"]) if self.progress["weights"]
                   else self.engine.init_weights)
        self.global_weights = [np.array(w) for w in weights]
        todo = [s for s in all_steps if s not in done]
        if until is not None:
            todo = [s for s in todo if all_steps.index(s) <= all_steps.index(until)]
        groups = _group_steps(todo)
        epochs_of = {"phase0": cfg.phase0_epochs, "central": cfg.reference_epochs}
        with Converter() as self.converter:
            for label, steps in groups:
                # one-step groups that train for many epochs show their epochs instead
                per_epoch = steps[0] in epochs_of
                self.rep.start(label + (" (epochs)" if per_epoch else ""),
                               epochs_of[steps[0]] if per_epoch else len(steps))
                self._on_epoch = self.rep.advance if per_epoch else None
                for step in steps:
                    t0 = time.perf_counter()
                    changed = self._run_step(step)
                    self._checkpoint(step, self.global_weights if changed else None, time.perf_counter() - t0)
                    if not per_epoch:
                        self.rep.advance()
                    if os.environ.get("FEDTINY_CRASH_AFTER") == step:   # tests: die like a kill -9
                        os._exit(137)
                self.rep.finish()
        if until is not None:
            return None
        report = self._report()
        for w in report["warnings"]:
            self.rep.note(f"warning: {w}")
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
        loss = e.fit(pub.x, pub.y, self.cfg.phase0_epochs, key(self.cfg.seed, "phase0"), on_epoch=self._on_epoch)
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
        loss = e.fit(x, y, self.cfg.reference_epochs, key(self.cfg.seed, "central"), on_epoch=self._on_epoch)
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
        warnings = []
        if cfg.method in FEDERATED and cfg.personalize:
            fx_before = [w.copy() for w in e.get_weights()[:e.n_fx]]
            rec["loss"] = e.fit(s.phase3_tune.x, s.phase3_tune.y, cfg.phase3_epochs,
                                key(cfg.seed, "phase3", dev), head_only=True)
            if not all(np.array_equal(a, b) for a, b in zip(fx_before, e.get_weights()[:e.n_fx])):
                raise RuntimeError("Phase 3 changed the frozen feature extractor")
            side = one_sided(s.phase3_val.y)
            if side:
                warnings.append(f"device {dev}: its threshold-validation split holds only {side} windows "
                                f"({len(s.phase3_val)}); the threshold stays at the default "
                                f"{cfg.default_threshold:g}")
            else:
                threshold, value = tune_threshold(e.predict(s.phase3_val.x), s.phase3_val.y, cfg.threshold_metric)
                rec.update(threshold_metric=cfg.threshold_metric, threshold_metric_value=value)
        weights = e.get_weights()
        names = self.data.fleet.class_names
        missing = missing_test_classes(s.train_all().y, s.test.y)
        if missing:
            warnings.append(f"device {dev}: its test split holds no {', '.join(names[k] for k in missing)} "
                            f"window although it trains on them; its accuracy says nothing about "
                            f"{'that class' if len(missing) == 1 else 'those classes'}")
        info = self._finalize(dev, weights, threshold, s, warnings)
        rec.update(threshold=threshold, float_acc=info["float_acc"], int8_acc=info["int8_acc"])
        self.metrics.log(rec)

    def _finalize(self, dev: int, weights, threshold: float, s: DeviceSplits, warnings: list[str]) -> dict:
        """Convert to INT8, evaluate float and INT8 (tflite-micro) on the test split, write artifacts.
        ``test_split.npz`` carries the host's raw int8 output scores (``out_int8``) beside its
        decisions, so the bench can tell a borderline disagreement from a real one without running
        the model; ``device.json`` records how dense layers were quantized (``dense_quantization``)."""
        from .quantize import DENSE_QUANTIZATION, quant_params, quantize_input
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
        atomic_savez(ddir / "test_split.npz", x=s.test.x, y=s.test.y, x_int8=x_int8, pred_int8=int8_pred,
                     out_int8=out)
        info = {
            "device": dev, "threshold": float(threshold),
            "class_names": self.data.fleet.class_names,
            "channel_names": self.data.fleet.channel_names,
            "input_shape": list(self.data.spec.input_shape),
            "channel_scale": [float(v) for v in self.data.fleet.channel_scale],
            **q,
            "dense_quantization": DENSE_QUANTIZATION,
            "float_acc": float(np.mean(float_pred == s.test.y)),
            "int8_acc": float(np.mean(int8_pred == s.test.y)),
            "n_test": int(len(s.test)),
            "model_bytes": len(tfl),
            "arena_bytes": arena_bytes(tfl),
            "model_sha256": hashlib.sha256(tfl).hexdigest(),
            "condition": self.data.fleet.devices[dev].condition,
            "class_counts": np.bincount(self.data.fleet.devices[dev].y, minlength=self.data.fleet.n_classes).tolist(),
            "test_class_counts": np.bincount(s.test.y, minlength=self.data.fleet.n_classes).tolist(),
            "warnings": warnings,
        }
        atomic_write_json(ddir / "device.json", info)
        return info

    def _report(self) -> dict:
        devs, warnings = [], []
        for i in range(self.cfg.devices):
            d = json.loads((device_dir(self.out, i) / "device.json").read_text())
            devs.append({k: d[k] for k in ("device", "float_acc", "int8_acc", "threshold", "n_test",
                                           "test_class_counts", "model_bytes", "arena_bytes", "model_sha256")})
            warnings += d["warnings"]
        names = self.data.fleet.class_names
        trained = [k for k in range(len(names)) if any(np.any(s.train_all().y == k) for s in self.data.splits)]
        untested = [k for k in trained if not any(d["test_class_counts"][k] for d in devs)]
        if untested:
            warnings.append(f"no device's test split holds a {', '.join(names[k] for k in untested)} window: "
                            "the reported accuracies never test "
                            f"{'that class' if len(untested) == 1 else 'those classes'}")
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
            "warnings": warnings,
            "timings_s": self.progress["timings"],
        }


def one_sided(y: np.ndarray) -> str | None:
    """'normal' or 'fault' when every label of ``y`` is on that side of the fault/no-fault decision
    (a threshold cannot be tuned on them), else None."""
    y = np.asarray(y)
    if len(y) and np.all(y == 0):
        return "normal"
    if len(y) and np.all(y != 0):
        return "fault"
    return None


def missing_test_classes(train_y: np.ndarray, test_y: np.ndarray) -> list[int]:
    """Classes a device trains on that its test split does not hold (sorted)."""
    return sorted(set(np.unique(train_y).tolist()) - set(np.unique(test_y).tolist()))


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


def check_writable(folder: Path) -> None:
    """Refuse, before any work, a run directory that cannot be created or written: its nearest
    existing ancestor must be a writable folder (``os.access`` also reports a read-only file
    system)."""
    p = Path(folder).absolute()
    while not p.exists():
        p = p.parent
    if not p.is_dir():
        raise RunError(f"cannot create run directory {folder}: {p} is a file")
    if not os.access(p, os.W_OK | os.X_OK):
        raise RunError(f"cannot write run directory {folder}: {p} is not writable")


def describe_step(step: str) -> str:
    """Human name of a step: 'Phase 0', 'Phase 1', 'round 5', 'device 3 (Phase 3)', ..."""
    if step.startswith("round"):
        return f"round {int(step[5:])}"
    if step.startswith("dev"):
        return f"device {int(step[3:])} (Phase 3 + INT8)"
    return {"phase0": "Phase 0", "phase1": "Phase 1", "central": "the centralized reference"}.get(step, step)


def train(cfg: TrainConfig, out: Path, resume: bool = False, reporter: Reporter | None = None,
          until: str | None = None) -> dict | None:
    """Run (or resume) one training run into ``out``; returns the report dict (None with ``until``).
    ``resume`` on a finished run returns its report at once (nothing is recomputed)."""
    run = Run(cfg, out, resume, reporter)
    if resume and until is None:
        done = run.finished_report()
        if done is not None:
            run.rep.note(f"{out} is already finished; nothing to resume (its report follows)")
            return done
    try:
        return run.execute(until)
    finally:
        run.rep.finish()


def load_or_train(cfg: TrainConfig, out: Path, reporter: Reporter | None = None) -> dict:
    """The finished run's report when ``out`` already holds this config and a report; otherwise
    train (resuming whatever part was done). Used by compare/ablate/demo so no work is redone."""
    out = Path(out)
    if (out / "report.json").exists() and (out / "config.json").exists():
        if json.loads((out / "config.json").read_text()) == cfg.to_dict():
            return json.loads((out / "report.json").read_text())
    return train(cfg, out, resume=(out / "config.json").exists(), reporter=reporter)
