"""Backends: how the server's requests reach the sites.

The server (``pipeline.Run``) speaks to sites only through a backend's three calls, each a list
of ``Task`` (device, weights, config) answered by one ``strategies.Reply`` per task, in task
order:

- ``fit(tasks)``       -> weights + metrics (``client.SiteClient.fit``)
- ``evaluate(tasks)``  -> metrics (``loss``, ``acc``)
- ``finalize(tasks)``  -> artifacts (model bytes, device.json, the metrics line)

A failed, timed-out or refused site is a Reply with ``error`` set; the server decides what a
missing reply means (``--min-sites``). ``remote`` is True when the sites write their artifacts
somewhere else than the server's run directory (the server then stores the returned ones).

``InProcessBackend`` runs every site in this process on one shared TF engine, sequentially in
task order (``--engine in-process-loop``); ``VectorizedBackend`` (the default) trains and evaluates
all sites of a Phase-2 request together with ``trainer.vectorized.VectorTrainer`` and fine-tunes
the Phase-3 heads of a fixed block of devices at once; the Flower backends live in
``trainer/flower/``.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .strategies import Reply


@dataclass
class Task:
    device: int
    weights: list
    config: dict


class Backend:
    """Interface (module doc)."""

    remote = False

    def fit(self, tasks: list[Task]) -> list[Reply]:
        raise NotImplementedError

    def evaluate(self, tasks: list[Task]) -> list[Reply]:
        raise NotImplementedError

    def finalize(self, tasks: list[Task]) -> list[Reply]:
        raise NotImplementedError

    def close(self) -> None:
        pass


class InProcessBackend(Backend):
    """All sites in this process (``sites[k]`` is device k's ``SiteClient``). Exceptions of a
    site propagate: in one process a failing site is a bug, not a network fault."""

    def __init__(self, sites, converter=None):
        self.sites = list(sites)
        self.converter = converter

    def fit(self, tasks):
        out = []
        for t in tasks:
            w, m = self.sites[t.device].fit(t.weights, t.config)
            out.append(Reply(t.device, w, m))
        return out

    def evaluate(self, tasks):
        return [Reply(t.device, None, self.sites[t.device].evaluate(t.weights, t.config)) for t in tasks]

    def finalize(self, tasks):
        out = []
        for t in tasks:
            art = self.sites[t.device].finalize(t.weights, t.config, self.converter)
            out.append(Reply(t.device, None, {}, art))
        return out


class VectorizedBackend(InProcessBackend):
    """All sites in this process, their local copies trained together (module doc).

    - ``fit`` of Phase-2 tasks: one vectorized fit over every task's site (its Phase-2 share, key
      (seed, phase2, round, device), FedProx anchored at the sent weights), the sent and trained
      weights evaluated on every site's validation windows at once; the same metrics as
      ``SiteClient.fit``. Phase-1 visits (one site at a time) go through the per-device loop.
    - ``evaluate``: every task's site at once (Phase-2 validation); score-histogram requests go
      through the per-device loop.
    - ``finalize``: the Phase-3 local training (head-only fine-tune, or the ``local`` reference's
      full training) is done for the block of ``block`` devices the asked device belongs to
      (blocks fixed by device number, so a resumed run groups devices alike), cached by the
      weights it started from, and handed to ``SiteClient.finalize``; threshold, INT8 and
      artifacts stay per device."""

    def __init__(self, sites, trainer, converter=None, block: int = 256):
        super().__init__(sites, converter)
        self.vt = trainer
        self.block = int(block)
        self._tuned: dict = {}
        self._blocks: set = set()
        from .quantize import Prefetched

        self.prefetch = Prefetched(converter)   # INT8 conversions of a block start ahead, 2 at a time

    def fit(self, tasks):
        if not tasks or any(t.config.get("phase") != "phase2" for t in tasks):
            return super().fit(tasks)
        vt, sites = self.vt, [self.sites[t.device] for t in tasks]
        tr = [(s.data.splits.phase2_train.x, s.data.splits.phase2_train.y) for s in sites]
        va = [(s.data.splits.phase2_val.x, s.data.splits.phase2_val.y) for s in sites]
        start = [t.weights for t in tasks]
        before = vt.evaluate(start, va)
        epochs = {int(t.config["epochs"]) for t in tasks}
        mus = {float(t.config.get("mu", 0.0)) for t in tasks}
        if len(epochs) != 1 or len(mus) != 1:
            return super().fit(tasks)
        keys = [s._key("phase2", int(t.config["round"]), t.device) for s, t in zip(sites, tasks)]
        W, L = vt.fit(start, tr, epochs.pop(), keys, mu=mus.pop(), anchors=start)
        after = vt.evaluate(W, va)
        out = []
        for t, s, w, loss, (b, ab), (a, acc), (_, y) in zip(tasks, sites, W, L, before, after, tr):
            groups = int(len(np.unique(s.data.splits.phase2_val.groups)))
            out.append(Reply(t.device, w, {"n": int(len(y)), "train_loss": loss, "loss_before": b,
                                           "acc_before": ab, "loss_after": a, "acc": acc,
                                           "val_groups": groups}))
        return out

    def evaluate(self, tasks):
        if any(t.config.get("phase") != "phase2" for t in tasks):     # score histograms: per site
            return super().evaluate(tasks)
        sites = [self.sites[t.device] for t in tasks]
        va = [(s.data.splits.phase2_val.x, s.data.splits.phase2_val.y) for s in sites]
        res = self.vt.evaluate([t.weights for t in tasks], va)
        return [Reply(t.device, None, {"loss": l, "acc": a, "n": int(len(v[1]))})
                for t, (l, a), v in zip(tasks, res, va)]

    def _tune_block(self, dev: int, weights, digest: str) -> None:
        import numpy as np

        from .config import FEDERATED

        cfg = self.sites[dev].cfg
        b0 = (dev // self.block) * self.block
        devs = list(range(b0, min(b0 + self.block, len(self.sites))))
        sites = [self.sites[d] for d in devs]
        if cfg.method == "local":
            data = [(s.data.splits.train_all().x, s.data.splits.train_all().y) for s in sites]
            init = self.sites[dev].engine.init_weights
            W, L = self.vt.fit([init] * len(devs), data, cfg.reference_epochs,
                               [s._key("local", d) for s, d in zip(sites, devs)])
        elif cfg.method in FEDERATED and cfg.personalize:
            data = [(s.data.splits.phase3_tune.x, s.data.splits.phase3_tune.y) for s in sites]
            W, L = self.vt.fit([weights] * len(devs), data, cfg.phase3_epochs,
                               [s._key("phase3", d) for s, d in zip(sites, devs)], head_only=True)
        else:
            W, L = None, None
        for i, (d, s) in enumerate(zip(devs, sites)):
            if W is not None:
                self._tuned[(d, digest)] = (W[i], L[i])
            # start converting the model this device will convert (its tuned weights, or the sent
            # ones) for the devices still to come
            if d >= dev:
                w = W[i] if W is not None else weights
                self.prefetch.start(s.data.spec, [np.asarray(a, np.float32) for a in w], s.representative_set())
        self._blocks.add((b0, digest))

    def finalize(self, tasks):
        import hashlib

        import numpy as np

        out = []
        for t in tasks:
            h = hashlib.sha256()
            for w in t.weights:
                h.update(np.ascontiguousarray(w, dtype=np.float32).tobytes())
            digest = h.hexdigest()
            if ((t.device // self.block) * self.block, digest) not in self._blocks:
                self._tune_block(t.device, t.weights, digest)
            tuned = self._tuned.pop((t.device, digest), None)
            art = self.sites[t.device].finalize(t.weights, t.config, self.prefetch, tuned=tuned)
            out.append(Reply(t.device, None, {}, art))
        return out
