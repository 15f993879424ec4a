"""The site side of every Flower backend: turn a request into a ``client.SiteClient`` call.

One ``SiteService`` lives per process that answers requests (a Ray worker in simulation; the
``fedtiny site`` worker in deployment) and keeps, for the life of that process, one TF engine per
model shape and the data of the devices it serves, so TensorFlow is imported and the data loaded
once per process, not once per message.

The site's data comes from the request's run config (seed, split fractions, fleet options) and
the site's own ``dataset`` (``fedtiny site --data``; in simulation the run's dataset): the site
loads it and keeps only its device's pool, split exactly as the in-process engine splits it. A
site of a fleet-folder run holds one device folder and reads nothing else (``dataprep.site_data``);
it knows its device number from its folder name and the run's ``device_names``.

Artifacts (``devices/devNN/``, including the raw ``test_split.npz``) are written under the site's
own ``site_dir``.

Before it serves a fleet-folder run, a deployed site checks that its folder fits the run the server
started (``greet``, answered to the server's first request, hello): every labelled recording can be
brought to the run's rate, has the run's channels in units that convert exactly to the run's,
and is labelled with the run's classes (``fleetdir.load_device``), and the split leaves every
part the method needs. Otherwise it refuses the run with the reason ("wrong dataset: ...") and
serves nothing; the server records that device's replies as failed.
"""
from __future__ import annotations

import json
import threading
from dataclasses import replace
from pathlib import Path

from ..rundir import write_if_changed


class SiteService:
    """Answers (kind, weights, config, run) requests; ``device`` fixes the device this site holds
    (deployment), None serves whatever device a request names (simulation)."""

    def __init__(self, dataset: str | None = None, device: int | None = None, site_dir: Path | None = None,
                 name: str | None = None):
        self.dataset, self.device, self.name = dataset, device, name
        self.site_dir = Path(site_dir) if site_dir is not None else None
        self._engines: dict = {}
        self._sites: dict = {}
        self._prepared = None
        self._data: dict = {}          # (run config, device) -> SiteData of a device folder
        self._lock = threading.Lock()
        self.requests = 0

    def _cfg(self, run: dict):
        from ..config import TrainConfig

        cfg = TrainConfig.from_dict(run)
        return replace(cfg, dataset=self.dataset) if self.dataset else cfg

    def site(self, run: dict, device: int, site_dir: Path | None = None):
        """The SiteClient of ``device`` under run config ``run`` (built once per process)."""
        from ..client import SiteClient
        from ..engine import Engine

        cfg = self._cfg(run)
        out = self.site_dir or (Path(site_dir) if site_dir else None)
        if out is None:
            raise ValueError("this site has no folder for its artifacts")
        k = (json.dumps(cfg.to_dict(), sort_keys=True), device, str(out))
        if k not in self._sites:
            data = self.data(cfg, device)
            ek = (data.spec, cfg.seed, cfg.lr, cfg.head_lr, cfg.batch_size)
            if ek not in self._engines:
                self._engines[ek] = Engine(data.spec, cfg.seed, cfg.lr, cfg.head_lr, cfg.batch_size)
            # the site's local run copy: its config, artifacts and test windows. In a simulation
            # the site folder is the run directory itself, whose config.json the server owns: a
            # site writes only a file that differs, so N workers never rewrite the server's file
            write_if_changed(out / "config.json", run)
            if self.site_dir is not None:            # a deployed site's own folder
                write_if_changed(out / "site.json", {"device": device, "dataset": cfg.dataset})
            self._sites[k] = SiteClient(cfg, data, self._engines[ek], out)
        return self._sites[k]

    def _folder_data(self, cfg, device: int):
        """The SiteData of this site's device folder under ``cfg`` (loaded once per run config)."""
        from ..dataprep import site_data

        k = (json.dumps(cfg.to_dict(), sort_keys=True), device)
        if k not in self._data:
            self._data[k] = site_data(cfg, self.dataset, device)
        return self._data[k]

    def greet(self, run: dict) -> tuple[int, str | None]:
        """(device, None) when this deployed site serves ``run``; (device or -1, why) when it refuses
        it: its device folder is not one the run names, or (a fleet-folder run) its data does not fit
        the run (module doc). ``why`` starts with "wrong dataset: "."""
        from ..data.fleet import DataError

        try:
            dev = self.hello(None, run)
        except ValueError as e:
            return (-1 if self.device is None else self.device), f"wrong dataset: {e}"
        if not run.get("public"):            # the site's own --data / --builtin under a dataset run
            return dev, None
        if self.name is None:
            return dev, (f"wrong dataset: the run trains on a fleet folder's devices "
                         f"({', '.join(run.get('device_names') or [])}); this site holds {self.dataset}, not "
                         "a device folder (give --data FLEET/<device>)")
        try:
            self._folder_data(self._cfg(run), dev)
        except DataError as e:
            return dev, f"wrong dataset: {e}"
        return dev, None

    def data(self, cfg, device: int):
        """The ``client.SiteData`` of ``device`` under ``cfg`` (a TrainConfig with this site's dataset):
        its own device folder, or its device's pool of the prepared fleet."""
        from ..client import SiteData
        from ..pipeline import prepare

        if device >= cfg.devices:
            raise ValueError(f"this site holds device {device}, but the run has {cfg.devices} devices")
        if self.name is not None:                         # one device folder of a fleet
            return self._folder_data(cfg, device)
        if self.device is not None:                       # a deployed site: its own device only
            return SiteData.from_prepared(prepare(cfg), device)   # keeps this device's pool only
        # a simulation worker serves many sites of the same run: prepare the fleet once
        # per run config, not once per site (1,000 sites x the whole fleet otherwise)
        ck = json.dumps(cfg.to_dict(), sort_keys=True)
        if self._prepared is None or self._prepared[0] != ck:
            self._prepared = (ck, prepare(cfg))
        return SiteData.from_prepared(self._prepared[1], device)

    def hello(self, fallback: int | None, run: dict | None = None) -> int:
        if self.name is not None:                 # a device folder: its number in the run's names
            names = list((run or {}).get("device_names") or [])
            if self.name not in names:
                raise ValueError(f"this site holds device {self.name!r}, which the run does not name "
                                 f"({', '.join(names) or 'its devices are numbered'})")
            if self.device is not None and names.index(self.name) != self.device:
                raise ValueError(f"device {self.name!r} is number {names.index(self.name)} of the run, "
                                 f"not --device-id {self.device}")
            self.device = names.index(self.name)
        dev = self.device if self.device is not None else fallback
        if dev is None:
            raise ValueError("this node has no device id (node config device-id or partition-id)")
        return int(dev)

    def handle(self, kind: str, weights, config: dict, run: dict, device: int) -> tuple:
        """(weights or None, metrics, artifacts or None) of one request for ``device``."""
        with self._lock:                         # one TF engine: requests run one at a time
            self.requests += 1
            if self.device is not None and device != self.device:
                raise ValueError(f"this site holds device {self.device}, not {device}")
            client = self.site(run, device, config.get("site_dir"))
            if kind == "fit":
                w, m = client.fit(weights, config)
                return w, m, None
            if kind == "evaluate":
                return None, client.evaluate(weights, config), None
            if kind == "finalize":
                art = client.finalize(weights, config)
                return None, {}, art
            raise ValueError(f"unknown request {kind!r}")

