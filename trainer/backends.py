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
task order; the Flower backends live in ``trainer/flower/``.
"""
from __future__ import annotations

from dataclasses import dataclass

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
