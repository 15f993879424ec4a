"""One harness for every method: Fed-Meta-Align, FedAvg, FedProx (each with or without Phase-3
personalization) and the local-only / centralized references, all from the same data splits and,
for the federated methods, the same Phase-0 start.

A run is a list of named steps (``phase0``, ``phase1``, ``round01``.., ``dev00``.., ``central``);
after each step the working weights and the metrics-line count are checkpointed under
``RUN/state/``. ``--resume`` skips the finished steps; since every random choice is keyed by
(seed, step, device) and TF ops are deterministic, a resumed run ends with the same numbers as an
uninterrupted one.

Where each step runs: ``Run`` is the server. Phase 0 (public pool) and the centralized reference
run here; the Phase-1 tour (one site at a time), the Phase-2 rounds (``strategies``: every site
trains, the strategy aggregates, every site evaluates) and Phase 3 (``client.SiteClient.finalize``)
are requests to the sites through a backend (``backends``: in-process by default; Flower
simulation and deployment in ``trainer/flower/``). Same seed, same requests, same numbers.
"""
from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import aggregation as agg
from .backends import Backend, InProcessBackend, Task
from .config import FEDERATED, REFERENCES, TrainConfig
from .data.fleet import DataError, Fleet, Pool
from .model import ModelSpec
from .rundir import (LOCK_FILE, FolderLock, Metrics, atomic_savez, atomic_write_bytes, atomic_write_json, dataset_label,
                     device_dir, device_label, load_weights, read_json, read_npz, save_weights)
from .splits import DeviceSplits
from .artifacts import check_artifacts
from .strategies import check_reply, make_strategy

# what to do about a damaged file of a run directory (the error line ends with it)
REDO_REPORT = ("delete it and run the same command with --resume: the report is rewritten from the "
               "finished steps")
REDO_CONFIG = "choose another --out (or restore the file from a copy)"

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
    for w in fleet.info.get("warnings", []):
        rep.note(f"warning: {w}")
    if cfg.faulty:
        from .faults import corrupt_splits, faulty_devices

        corrupt_splits(splits, faulty_devices(cfg.devices, cfg.faulty, cfg.seed), cfg.fault,
                       fleet.n_classes, cfg.seed)
    spec = ModelSpec(fleet.input_shape, fleet.n_classes)
    return Prepared(fleet, spec, splits)


@dataclass
class ServerData:
    """What the server holds: the model's shape, the public pool (Phase 0) and the class names.
    No device's windows."""

    spec: ModelSpec
    public: Pool
    class_names: list[str]

    @classmethod
    def from_prepared(cls, p: Prepared) -> "ServerData":
        return cls(p.spec, p.fleet.public, list(p.fleet.class_names))


class BackendFactory:
    """How a Run reaches its sites: ``check(cfg)`` refuses, before anything is written, a run this
    backend cannot execute; ``prepare(run)`` loads (and checks) the data the server needs and
    returns a ``ServerData``; ``connect(run)`` (after the server's engine exists) returns the
    ``backends.Backend``."""

    name = "inprocess"

    def check(self, cfg: TrainConfig) -> None:
        pass

    def prepare(self, run: "Run") -> ServerData:
        raise NotImplementedError

    def connect(self, run: "Run") -> Backend:
        raise NotImplementedError


_TRAINERS: dict = {}


class InProcess(BackendFactory):
    """Every site in this process (the default ``--engine inprocess``): Phase-2 requests and the
    Phase-3 local training vectorized over the sites (``backends.VectorizedBackend``); with
    ``vectorized=False`` (``--engine in-process-loop``) one site after another on the server's
    TF engine, as before."""

    def __init__(self, vectorized: bool = True):
        self.vectorized = bool(vectorized)
        self.name = "inprocess" if self.vectorized else "inprocess-loop"

    def prepare(self, run: "Run") -> ServerData:
        from .quantize import Converter

        Converter.warm_up()       # the conversion worker starts (imports TF) while Phases 0-2 run
        run.data = prepare(run.cfg, run.rep)
        return ServerData.from_prepared(run.data)

    def connect(self, run: "Run") -> Backend:
        from .client import SiteClient, SiteData

        sites = [SiteClient(run.cfg, SiteData.from_prepared(run.data, i), run.engine, run.out)
                 for i in range(run.cfg.devices)]
        if not self.vectorized:
            return InProcessBackend(sites)
        from .backends import VectorizedBackend
        from .vectorized import VectorTrainer

        cfg = run.cfg
        # one trainer (its compiled, traced functions) per architecture and optimizer settings for
        # the whole process: compare / ablate / demo run many small runs back to back
        k = (run.server_data.spec, cfg.lr, cfg.head_lr, cfg.batch_size)
        if k not in _TRAINERS:
            _TRAINERS[k] = VectorTrainer(*k)
        return VectorizedBackend(sites, _TRAINERS[k])


def prepare_server(cfg: TrainConfig, reporter: Reporter | None = None) -> ServerData:
    """The server's data for the Flower backends: the public pool (scaled to model units as
    ``prepare`` scales it), the model's shape and the class names. The device pools the loader
    also returns are dropped at once: no server step reads them."""
    from .dataprep import public_pool

    rep = reporter or Reporter()
    rep.note(f"preparing the public pool: {cfg.public or cfg.dataset}")
    fleet = public_pool(cfg)
    return ServerData(ModelSpec(fleet.input_shape, fleet.n_classes), fleet.public, list(fleet.class_names))


def steps_for(cfg: TrainConfig) -> list[str]:
    devs = [f"dev{i:02d}" for i in range(cfg.devices)]
    if cfg.method in REFERENCES:
        return []
    if cfg.method == "local":
        return devs
    if cfg.method == "centralized":
        return ["central"] + devs
    out = ["phase0"]
    if cfg.method == "fedmetaalign" and not cfg.skip_phase1 and cfg.tours > 0:
        out.append("phase1")
    out += [f"round{r:02d}" for r in range(1, cfg.n_rounds + 1)]
    return out + devs


class Run:
    """A run directory plus the state needed to execute or resume its steps."""

    def __init__(self, cfg: TrainConfig, out: Path, resume: bool = False, reporter: Reporter | None = None,
                 backend: "BackendFactory | None" = None, min_sites: int = 1):
        self.cfg = cfg
        self.out = Path(out)
        self.rep = reporter or Reporter()
        self.state = self.out / "state"
        self.backend_factory = backend or InProcess()
        self.backend_factory.check(cfg)
        if not 1 <= int(min_sites) <= cfg.devices:
            raise RunError(f"--min-sites {min_sites} must lie between 1 and --devices {cfg.devices}")
        self.min_sites = int(min_sites)
        self._resume = resume
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
            progress = read_json(prog_path, REDO_CONFIG)
        if cfg_path.exists():
            old = stored_config(read_json(cfg_path, REDO_CONFIG))
            if not progress["done"]:
                return fresh
            if old != self.cfg.to_dict():
                diff = sorted(k for k in set(old) | set(self.cfg.to_dict()) if old.get(k) != self.cfg.to_dict().get(k))
                raise RunError(f"run directory {self.out} already holds a different config "
                               f"(differs in: {', '.join(diff)}); choose another --out")
            if not resume:
                raise RunError(f"run directory {self.out} already holds this run; "
                               "add --resume to continue it or choose another --out")
            Metrics(self.out / "metrics.jsonl").check(progress["metrics_lines"])   # before any work
        elif self.out.exists() and not self.out.is_dir():
            raise RunError(f"--out {self.out} is a file")
        elif resume and self.out.exists() and any(p.name != LOCK_FILE for p in self.out.iterdir()):
            raise RunError(f"{self.out} holds no fedtiny run to resume (no config.json)")
        check_writable(self.out)
        return progress

    def finished_report(self) -> dict | None:
        """The report of a run whose every step is done (None otherwise)."""
        rpath = self.out / "report.json"
        if set(steps_for(self.cfg)) <= set(self.progress["done"]) and rpath.exists():
            return read_json(rpath, REDO_REPORT)
        return None

    def _create(self) -> None:
        """Write config.json (and an empty log) once the data has been prepared without error."""
        self.out.mkdir(parents=True, exist_ok=True)
        atomic_write_json(self.out / "config.json", self.cfg.to_dict())
        self.metrics = Metrics(self.out / "metrics.jsonl")
        for w in self.metrics.resume(self.progress["metrics_lines"]):
            self.rep.note(f"warning: {w}")

    def _checkpoint(self, step: str, weights, seconds: float) -> None:
        old = self.progress.get("weights")
        if weights is not None:
            name = f"weights-{step}.npz"
            save_weights(self.state / name, weights)
            self.progress["weights"] = name
        old_server = self.progress.get("server_state")
        server = self.strategy.state() if self.strategy is not None else {}
        if server:                       # momentum / reference direction of the strategy
            self.progress["server_state"] = f"server-{step}.npz"
            atomic_savez(self.state / self.progress["server_state"], **server)
        self.progress["done"].append(step)
        self.progress["metrics_lines"] = self.metrics.lines
        self.progress["timings"][step] = round(seconds, 3)
        atomic_write_json(self.state / "progress.json", self.progress)
        if weights is not None and old and old != self.progress["weights"]:
            (self.state / old).unlink(missing_ok=True)
        if old_server and old_server != self.progress.get("server_state"):
            (self.state / old_server).unlink(missing_ok=True)
        for f in self.state.glob("best-round*.npz"):       # --rounds auto: only the best round's
            if f.name != self.progress.get("best"):
                f.unlink(missing_ok=True)

    # --- execution -------------------------------------------------------------------------
    def execute(self, until: str | None = None) -> dict | None:
        """Run the remaining steps; with ``until`` stop after that step (no report; continue later
        with resume). Returns the report dict, or None when stopped early. The run directory is
        locked (``rundir.FolderLock``) while it runs: a second process on it gets RunLocked."""
        created = not self.out.exists()
        lock = FolderLock(self.out).acquire()
        try:
            self.progress = self._check(self._resume)      # again: another process may have moved it on
            return self._execute(until)
        finally:
            lock.release()
            if created and self.out.is_dir() and not any(self.out.iterdir()):
                self.out.rmdir()                 # failed before writing anything: leave no folder

    def _execute(self, until: str | None) -> dict | None:
        cfg = self.cfg
        all_steps = steps_for(cfg)
        if until is not None and until not in all_steps:
            raise RunError(f"this run has no step {until!r}")
        done = self.progress["done"]
        if done:
            nxt = next((s for s in all_steps if s not in done), None)
            self.rep.note(f"resuming {self.out} at {describe_step(nxt)} ({len(done)} of {len(all_steps)} "
                          "steps done)" if nxt else f"{self.out}: every step is done; writing the report")
        factory = self.backend_factory
        self.server_data = factory.prepare(self)      # data checked before anything is written
        self._create()
        from .engine import Engine

        self.engine = Engine(self.server_data.spec, cfg.seed, cfg.lr, cfg.head_lr, cfg.batch_size)
        weights = (load_weights(self.state / self.progress["weights"], REDO_CONFIG) if self.progress["weights"]
                   else self.engine.init_weights)
        self.global_weights = [np.array(w) for w in weights]
        self.strategy = make_strategy(cfg) if cfg.method in FEDERATED else None
        if self.strategy is not None and self.progress.get("server_state"):
            self.strategy.load_state(read_npz(self.state / self.progress["server_state"], todo=REDO_CONFIG))
        todo = [s for s in all_steps if s not in done]
        if until is not None:
            todo = [s for s in todo if all_steps.index(s) <= all_steps.index(until)]
        groups = _group_steps(todo)
        epochs_of = {"phase0": cfg.phase0_epochs, "central": cfg.reference_epochs}
        undelivered = []
        self._todo, self._phase3 = todo, {}
        self.backend = factory.connect(self)
        try:
            for label, steps in groups:
                # one-step groups that train for many epochs show their epochs instead
                per_epoch = steps[0] in epochs_of
                self.rep.start(label + (" (epochs)" if per_epoch else ""),
                               epochs_of[steps[0]] if per_epoch else len(steps))
                self._on_epoch = self.rep.advance if per_epoch else None
                for step in steps:
                    t0 = time.perf_counter()
                    changed = self._run_step(step)
                    if changed is None:                  # a site did not deliver its Phase 3
                        undelivered.append(step)
                    else:
                        self._checkpoint(step, self.global_weights if changed else None, time.perf_counter() - t0)
                    if not per_epoch:
                        self.rep.advance()
                    if os.environ.get("FEDTINY_CRASH_AFTER") == step:   # tests: die like a kill -9
                        os._exit(137)
                self.rep.finish()
        finally:
            self.backend.close()
        if undelivered:
            raise RunError(f"{', '.join(describe_step(s) for s in undelivered)} did not deliver "
                           "(see metrics.jsonl); every other step is kept: continue with --resume")
        if until is not None:
            return None
        report = self._report()
        for line in warning_lines(report["warnings"]):
            self.rep.note(line)
        atomic_write_json(self.out / "report.json", report)
        return report

    def _run_step(self, step: str) -> bool | None:
        """Run one step; True when it changed the working (global) weights, None when a site did
        not deliver it (the step stays undone)."""
        if step == "phase0":
            self._phase0()
        elif step == "phase1":
            self._phase1()
        elif step.startswith("round"):
            if "stopped" in self.progress:      # --rounds auto stopped earlier: nothing to do
                return False
            self._round(int(step[5:]))
        elif step == "central":
            self._central()
        elif step.startswith("dev"):
            return False if self._device(int(step[3:])) else None
        return True

    def _phase0(self) -> None:
        """Server step: train on the public pool that no device owns."""
        pub = self.server_data.public
        e = self.engine
        e.set_weights(self.global_weights)
        loss = e.fit(pub.x, pub.y, self.cfg.phase0_epochs, key(self.cfg.seed, "phase0"), on_epoch=self._on_epoch)
        self.global_weights = e.get_weights()
        _, acc = e.evaluate(pub.x, pub.y)
        self.metrics.log({"phase": "phase0", "epochs": self.cfg.phase0_epochs, "loss": loss, "public_acc": acc})

    def _phase1(self) -> None:
        """Server step: the serial tour. The model goes to one site at a time in tour order, the
        site trains a few epochs on its Phase-1 share, the returned model goes on to the next site.
        A site that fails (or sends an unusable reply) is skipped: the model goes on unchanged."""
        cfg = self.cfg

        def visit(tour: int, visit_no: int, dev: int) -> None:
            task = Task(dev, self.global_weights, {"phase": "phase1", "tour": tour, "epochs": cfg.phase1_epochs})
            reply = self.backend.fit([task])[0]
            bad = check_reply(reply, self.global_weights, ("n",))
            rec = {"phase": "phase1", "tour": tour, "visit": visit_no, "device": dev}
            if bad:
                self.metrics.log({**rec, "loss": float("nan"), "failed": bad},
                                 why={"loss": "the site's reply was unusable (see failed)"})
                self.rep.note(f"Phase 1: device {dev} skipped ({bad})")
                return
            self.global_weights = [np.array(w) for w in reply.weights]
            empty = "empty Phase-1 share: the device has no Phase-1 windows, the model passed on unchanged"
            self.metrics.log({**rec, "loss": reply.metrics.get("train_loss", float("nan"))},
                             why={"loss": empty if reply.metrics.get("n") == 0 else "the site sent no finite loss"})

        run_tours(cfg.devices, cfg.tours, cfg.tour, cfg.seed, visit)

    def _round(self, r: int) -> None:
        """Server step: one Phase-2 round. Every site trains from the global weights; the strategy
        aggregates the usable replies (at least ``min_sites``); every site then evaluates the new
        global weights on its Phase-2 validation windows."""
        cfg, strategy = self.cfg, self.strategy
        conf = strategy.fit_config(r)
        replies = self.backend.fit([Task(i, self.global_weights, conf) for i in range(cfg.devices)])
        good, failed = [], {}
        for rep in replies:
            bad = check_reply(rep, self.global_weights, strategy.needs)
            if bad:
                failed[rep.device] = bad
            else:
                good.append(rep)
        if failed:
            self.rep.note(f"round {r}: no usable reply from "
                          + "; ".join(f"device {d} ({why})" for d, why in sorted(failed.items())))
        if cfg.faulty and cfg.fault in ("random-update", "scaled-update"):
            self._random_updates(r, good)
        if len(good) < self.min_sites:
            raise RunError(f"round {r}: only {len(good)} of {cfg.devices} sites answered usably "
                           f"(--min-sites {self.min_sites}); failed: "
                           + "; ".join(f"device {d}: {why}" for d, why in sorted(failed.items()))
                           + ". Finished steps are kept: continue with --resume")
        rec = {"phase": "phase2", "round": r, "method": cfg.method,
               "local_val_acc": [x.metrics["acc"] for x in good], "n_samples": [int(x.metrics["n"]) for x in good]}
        if failed:
            rec.update(devices=[x.device for x in good], failed={str(d): why for d, why in sorted(failed.items())})
        self.global_weights, agg_rec = strategy.aggregate(self.global_weights, good)
        rec.update(agg_rec)
        accs = self._global_val_acc()
        answered = [a for a in accs if a is not None]
        losses = [x for x in self._val_loss if x is not None]
        rec.update(global_val_acc=float(np.mean(answered)) if answered else float("nan"),
                   global_val_acc_per_device=accs,
                   global_val_loss=float(np.mean(losses)) if losses else float("nan"))
        self.metrics.log(rec, why={"global_val_acc": "no site answered the evaluation",
                                   "global_val_loss": "no site answered the evaluation",
                                   "local_val_acc": "the device has no Phase-2 validation windows",
                                   "global_val_acc_per_device": "the device has no Phase-2 validation windows"})
        if cfg.auto_rounds:
            self._early_stop(r, rec["global_val_loss"])

    def _early_stop(self, r: int, loss: float) -> None:
        """``--rounds auto`` (``stopping``): record round r's global validation loss, keep the best
        round's weights (``state/best-roundNN.npz``), and when the rule says stop, carry the best
        round's weights on, log the chosen round and the curve (metrics.jsonl ``phase: stopping``)
        and mark the remaining rounds as not needed. The curve and the best round live in
        progress.json, so a resumed run decides exactly as an uninterrupted one."""
        from .stopping import best_round, should_stop

        curve = self.progress.setdefault("val_loss_curve", [])
        curve.append(loss if np.isfinite(loss) else None)
        vals = [float("nan") if v is None else v for v in curve]
        if best_round(vals) == r:
            name = f"best-round{r:02d}.npz"
            save_weights(self.state / name, self.global_weights)
            self.progress["best"] = name
        if should_stop(vals, self.cfg.patience, self.cfg.max_rounds):
            b = best_round(vals)
            self.global_weights = [np.array(w) for w in load_weights(self.state / self.progress["best"])]
            self.progress["stopped"] = {"after_round": r, "chosen_round": b}
            self.metrics.log({"phase": "stopping", "rule": "rounds auto", "metric": "global_val_loss",
                              "patience": self.cfg.patience, "max_rounds": self.cfg.max_rounds,
                              "stopped_after_round": r, "chosen_round": b, "curve": curve})
            self.rep.note(f"Phase 2 stopped after round {r}: best global validation loss at round {b}")

    def _random_updates(self, r: int, replies) -> None:
        """``--fault random-update``: what the server receives from each faulty device is a random
        direction with the norm of its real update (``faults.random_update``); ``scaled-update``:
        a poisoner's inflated update and claims (``faults.scaled_update``). Keyed by (seed,
        round, device). Injected where replies arrive, so every backend sees the same."""
        from .faults import FAULT_STREAM, faulty_devices, random_update, scaled_update

        bad = set(faulty_devices(self.cfg.devices, self.cfg.faulty, self.cfg.seed))
        for rep in replies:
            if rep.device in bad and self.cfg.fault == "scaled-update":
                rep.weights, rep.metrics = scaled_update(self.global_weights, rep.weights, rep.metrics)
            elif rep.device in bad:
                rng = np.random.default_rng([self.cfg.seed, FAULT_STREAM, 3, r, rep.device + 1])
                rep.weights = random_update(self.global_weights, rep.weights, rng)

    def _global_val_acc(self) -> list[float | None]:
        """Every site's accuracy of the global weights on its Phase-2 validation windows (None for
        a site that did not answer); their losses go to ``self._val_loss``."""
        replies = self.backend.evaluate([Task(i, self.global_weights, {"phase": "phase2"})
                                         for i in range(self.cfg.devices)])
        ok = [check_reply(x, None, ("acc", "loss")) is None for x in replies]
        self._val_loss = [float(x.metrics["loss"]) if g else None for x, g in zip(replies, ok)]
        return [x.metrics["acc"] if g else None for x, g in zip(replies, ok)]

    def _central(self) -> None:
        """Centralized reference: one model on the pooled non-test windows of every device (not a
        federated step: only the in-process backend, which holds every device, can run it)."""
        pools = [s.train_all() for s in self.data.splits]
        x = np.concatenate([p.x for p in pools])
        y = np.concatenate([p.y for p in pools])
        e = self.engine
        e.set_weights(self.engine.init_weights)
        loss = e.fit(x, y, self.cfg.reference_epochs, key(self.cfg.seed, "central"), on_epoch=self._on_epoch)
        self.global_weights = e.get_weights()
        self.metrics.log({"phase": "central", "epochs": self.cfg.reference_epochs, "loss": loss, "n": int(len(y))})

    # --- per device: Phase 3 and artifacts (a site step) -------------------------------------
    def _device(self, dev: int) -> bool:
        """Send the final global weights to site ``dev`` for Phase 3; store what it returns (a
        remote site keeps its test windows). False when the site did not deliver."""
        if dev not in self._phase3:
            # remote sites run Phase 3 at the same time: one request to each site still to do
            devs = [int(x[3:]) for x in self._todo if x.startswith("dev") and int(x[3:]) >= dev] \
                if self.backend.remote else [dev]
            conf = {"phase": "phase3", **self._fleet_threshold()}
            tasks = [Task(d, self.global_weights, conf) for d in devs]
            self._phase3.update({r.device: r for r in self.backend.finalize(tasks)})
        reply = self._phase3.pop(dev)
        bad = reply.error or check_artifacts(reply.artifacts, dev, self._model_signature())
        if bad:
            self.rep.note(f"device {dev}: Phase 3 failed ({bad})")
            self.metrics.log({"phase": "phase3", "device": dev, "failed": bad})
            return False
        art = reply.artifacts
        if self.backend.remote:
            ddir = device_dir(self.out, dev, self.cfg.device_names)
            atomic_write_bytes(ddir / "model_int8.tflite", art["model_int8"])
            atomic_write_bytes(ddir / "model_float.keras", art["model_float"])
            atomic_write_json(ddir / "device.json", art["device_json"])
        self.metrics.log(art["record"])
        return True

    def _model_signature(self):
        """What every device's INT8 model of this run must look like (``artifacts.ModelSignature``):
        read off the server's own conversion of the final global model, calibrated on public
        windows; None for in-process sites (their artifacts never crossed a network)."""
        if not self.backend.remote:
            return None
        if getattr(self, "_signature", None) is None:
            from .artifacts import ModelSignature
            from .quantize import Converter

            rep_x = self.server_data.public.x[:self.cfg.rep_samples]
            self._signature = ModelSignature.of(Converter().convert(self.server_data.spec, self.global_weights, rep_x))
        return self._signature

    def _fleet_threshold(self) -> dict:
        """Server step before Phase 3 (federated methods): every site sends the per-side histogram
        of its threshold-validation scores under the final global weights; the server checks and
        merges them and tunes one fleet threshold (``fleet_threshold``), which a site uses when its
        own split cannot tune one. Logged once (metrics.jsonl ``phase: fleet_threshold``) and kept in
        progress.json, so a resumed run sends the same value. Returns the Phase-3 config entry
        (empty when no threshold could be tuned)."""
        from .fleet_threshold import check_histogram, merge_histograms, threshold_from_histogram

        cfg = self.cfg
        if cfg.method not in FEDERATED:
            return {}
        if "fleet_threshold" not in self.progress:
            replies = self.backend.evaluate([Task(i, self.global_weights, {"phase": "scores"})
                                             for i in range(cfg.devices)])
            good, refused = [], {}
            for r in replies:
                bad = check_reply(r, None, ("hist",)) or check_histogram(r.metrics["hist"])
                if bad:
                    refused[str(r.device)] = bad
                else:
                    good.append(r.metrics["hist"])
            tuned = threshold_from_histogram(merge_histograms(good), cfg.threshold_metric) if good else None
            merged = merge_histograms(good).sum(axis=1).tolist() if good else [0, 0]
            rec = {"phase": "fleet_threshold", "threshold": tuned[0] if tuned else None,
                   "metric": cfg.threshold_metric, "metric_value": tuned[1] if tuned else None,
                   "sites": len(good), "windows_normal_fault": merged}
            if refused:
                rec["refused"] = refused
                self.rep.note("fleet threshold: refused histograms from "
                              + "; ".join(f"device {d} ({why})" for d, why in refused.items()))
            self.metrics.log(rec)
            self.progress["fleet_threshold"] = rec["threshold"]
        t = self.progress["fleet_threshold"]
        return {} if t is None else {"fleet_threshold": float(t)}

    def _report(self) -> dict:
        devs, warnings, infos = [], [], []
        for i in range(self.cfg.devices):
            d = read_json(device_dir(self.out, i, self.cfg.device_names) / "device.json")
            infos.append(d)
            devs.append({"name": device_label(self.cfg.device_names, i)} | {k: d.get(k) for k in ("device", "float_acc", "int8_acc", "int8_far", "int8_dr",
                                               "float_far", "float_dr", "threshold", "threshold_origin",
                                               "n_test", "test_class_counts", "model_bytes", "arena_bytes",
                                               "model_sha256")})
            warnings += d["warnings"]
        names = self.server_data.class_names
        # a device trains on every window but its test split: class_counts - test_class_counts
        train_counts = [np.subtract(d["class_counts"], d["test_class_counts"]) for d in infos]
        trained = [k for k in range(len(names)) if any(c[k] > 0 for c in train_counts)]
        untested = [k for k in trained if not any(d["test_class_counts"][k] for d in devs)]
        if untested:
            warnings.append(f"no device's test split holds a {', '.join(names[k] for k in untested)} window: "
                            "the reported accuracies never test "
                            f"{'that class' if len(untested) == 1 else 'those classes'}")
        fa = [d["float_acc"] for d in devs]
        ia = [d["int8_acc"] for d in devs]
        return {
            "run": self.out.name, "dataset": dataset_label(self.cfg), "method": self.cfg.method,
            "personalize": self.cfg.personalize if self.cfg.method in FEDERATED else False,
            "seed": self.cfg.seed, "class_names": self.server_data.class_names,
            "devices": devs,
            "summary": {"mean_float_acc": float(np.mean(fa)), "mean_int8_acc": float(np.mean(ia)),
                        **fleet_rates([d.get("int8_counts") for d in infos]),
                        "threshold_origins": {o: sum(1 for d in devs if d["threshold_origin"] == o)
                                              for o in ("local", "fleet", "default")},
                        "max_int8_drop_pp": float(100 * np.max(np.subtract(fa, ia))),
                        "max_model_bytes": max(d["model_bytes"] for d in devs),
                        "max_arena_bytes": max(d["arena_bytes"] for d in devs)},
            "phase2": self._rounds_summary(),
            "warnings": warnings,
            **({"faults": self._fault_summary(devs)} if self.cfg.faulty else {}),
            "timings_s": self.progress["timings"],
        }

    def _rounds_summary(self) -> dict | None:
        """Phase 2 in numbers (federated methods): the rounds mode, the rounds run, the round whose
        model went on (the last one unless --rounds auto chose an earlier one), and the global
        validation curves (loss and accuracy per round)."""
        if self.cfg.method not in FEDERATED:
            return None
        lines = [json.loads(x) for x in (self.out / "metrics.jsonl").read_text().splitlines()]
        rounds = [x for x in lines if x.get("phase") == "phase2"]
        stop = self.progress.get("stopped")
        return {"rounds": self.cfg.rounds, "patience": self.cfg.patience if self.cfg.auto_rounds else None,
                "max_rounds": self.cfg.max_rounds if self.cfg.auto_rounds else None,
                "rounds_run": len(rounds),
                "chosen_round": stop["chosen_round"] if stop else len(rounds),
                "val_loss": [x.get("global_val_loss") for x in rounds],
                "val_acc": [x.get("global_val_acc") for x in rounds]}

    def _fault_summary(self, devs: list[dict]) -> dict:
        """With --faulty: which devices misbehaved, the honest devices' mean accuracies, and the
        aggregation weight the faulty ones received in every Phase-2 round (sum of their w_k)."""
        from .faults import faulty_devices

        bad = faulty_devices(self.cfg.devices, self.cfg.faulty, self.cfg.seed)
        honest = [d for d in devs if d["device"] not in bad]
        share = []
        for line in (self.out / "metrics.jsonl").read_text().splitlines():
            rec = json.loads(line)
            if rec.get("phase") == "phase2" and "weights" in rec:
                ids = rec.get("devices", list(range(self.cfg.devices)))
                share.append(float(sum(w for i, w in zip(ids, rec["weights"]) if i in bad)))
        return {"kind": self.cfg.fault, "devices": bad,
                "honest_mean_float_acc": float(np.mean([d["float_acc"] for d in honest])),
                "honest_mean_int8_acc": float(np.mean([d["int8_acc"] for d in honest])),
                "faulty_weight_share_per_round": share}


def fleet_rates(counts: list[dict | None]) -> dict:
    """Fleet-wide INT8 figures over every device's test windows pooled (counts as
    ``threshold.detection_rates`` gives them): ``fleet_int8_acc`` = correct / windows,
    ``fleet_int8_far`` = false alarms / normal windows, ``fleet_int8_dr`` = detections / fault
    windows (None without windows of that side); plus the means over devices of the per-device rates
    (``mean_int8_far``, ``mean_int8_dr``, over the devices that have windows of that side)."""
    c = [x for x in counts if x]
    nn, nf = sum(x["n_normal"] for x in c), sum(x["n_fault"] for x in c)
    n = nn + nf
    far = [x["false_alarms"] / x["n_normal"] for x in c if x["n_normal"]]
    dr = [x["detections"] / x["n_fault"] for x in c if x["n_fault"]]
    return {"fleet_int8_acc": sum(x["correct"] for x in c) / n if n else None,
            "fleet_int8_far": sum(x["false_alarms"] for x in c) / nn if nn else None,
            "fleet_int8_dr": sum(x["detections"] for x in c) / nf if nf else None,
            "mean_int8_far": float(np.mean(far)) if far else None,
            "mean_int8_dr": float(np.mean(dr)) if dr else None}


MAX_PRINTED_WARNINGS = 12


def warning_lines(warnings: list[str], limit: int = MAX_PRINTED_WARNINGS) -> list[str]:
    """The lines printed at the end of a run: ``warning: W`` for the first ``limit`` warnings, then
    one line saying how many more there are (a fleet of 1,000 devices can have hundreds); all of
    them stay in report.json ``warnings``."""
    lines = [f"warning: {w}" for w in warnings[:limit]]
    if len(warnings) > limit:
        lines.append(f"warning: ... and {len(warnings) - limit} more (report.json \"warnings\" lists all "
                     f"{len(warnings)})")
    return lines


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
          until: str | None = None, backend: BackendFactory | None = None, min_sites: int = 1) -> dict | None:
    """Run (or resume) one training run into ``out``; returns the report dict (None with ``until``).
    ``resume`` on a finished run returns its report at once (nothing is recomputed). ``backend``
    chooses how the server reaches the sites (default: all in this process); a Phase-2 round
    needs usable replies from at least ``min_sites`` sites."""
    run = Run(cfg, out, resume, reporter, backend, min_sites)
    if cfg.method in REFERENCES:           # no federated steps: a forest per device (or one central)
        if until is not None or not isinstance(run.backend_factory, InProcess):
            raise RunError(f"--method {cfg.method} runs in this process only and has no steps to stop at")
        from .reference import train_reference

        return train_reference(cfg, out, reporter)
    if resume and until is None:
        done = run.finished_report()
        if done is not None:
            run.rep.note(f"{out} is already finished; nothing to resume (its report follows)")
            return done
    try:
        return run.execute(until)
    finally:
        run.rep.finish()


def stored_config(d: dict) -> dict:
    """A run directory's config.json as this version writes it: fields added since it was written
    take their defaults (a field's default is what every earlier run did), so an older run still
    resumes and is still reused. A file TrainConfig refuses is returned as it is (it then differs)."""
    try:
        return TrainConfig.from_dict(d).to_dict()
    except (ValueError, TypeError):
        return d


def load_or_train(cfg: TrainConfig, out: Path, reporter: Reporter | None = None) -> dict:
    """The finished run's report when ``out`` already holds this config and a report; otherwise
    train (resuming whatever part was done). Used by compare/ablate/demo so no work is redone."""
    out = Path(out)
    if (out / "report.json").exists() and (out / "config.json").exists():
        if stored_config(read_json(out / "config.json", REDO_CONFIG)) == cfg.to_dict():
            return read_json(out / "report.json", REDO_REPORT)
    return train(cfg, out, resume=(out / "config.json").exists(), reporter=reporter)
