"""What the two Flower backend factories (simulation, deployment) share: they run the federated
methods only, the server holds only the public pool (``prepare_server``), and the sites are reached
through one ``FlowerBackend`` over the factory's ``grid``."""
from __future__ import annotations

from ..config import FEDERATED
from ..data.fleet import DataError
from ..pipeline import BackendFactory, Run, RunError, prepare_server


class FlowerFactory(BackendFactory):
    """Subclasses set ``runs`` (what the refusal names) and ``instead`` (what to use for the
    references), and may add FlowerBackend options with ``backend_options``."""

    runs = "Flower"
    instead = "fedtiny train"
    grid = None
    timeout = 900.0
    wait = 300.0

    def check(self, cfg) -> None:
        if cfg.method not in FEDERATED:
            raise DataError(f"{self.runs} runs the federated methods ({', '.join(FEDERATED)}); "
                            f"{cfg.method} pools or never shares data: use {self.instead}")

    def prepare(self, run: Run):
        return prepare_server(run.cfg, run.rep)

    def backend_options(self, run: Run) -> dict:
        return {}

    def connect(self, run: Run):
        from .backend import FlowerBackend, SitesMissing

        self.backend = FlowerBackend(self.grid, run.cfg.to_dict(), run.cfg.devices, self.timeout, self.wait,
                                     note=run.rep.note, **self.backend_options(run))
        try:
            self.backend.connect_all()
        except SitesMissing as e:
            raise RunError(str(e)) from None
        return self.backend
