"""``fedtiny train --engine flower-sim``: the same run through Flower's simulation engine
(``flwr.simulation.run_simulation``, Ray backend).

The server (``pipeline.Run``) runs inside our ServerApp's ``main`` (Flower runs it in a thread of
this process) and reaches the N virtual SuperNodes through ``FlowerBackend``; each node runs
``client_app.app`` in a Ray worker, where one ``SiteService`` (one TF engine) per worker answers
it. Ray keeps its files in a fresh temporary folder (not /tmp/ray), listens on 127.0.0.1 only,
gets one CPU per worker and no dashboard. The sites write their artifacts (and test windows) into
the run directory itself, since in a simulation they are on this machine.
"""
from __future__ import annotations

import logging
import os
import shutil
import tempfile
from pathlib import Path

from ..data.fleet import DataError
from ..pipeline import Run, RunError
from .factory import FlowerFactory


class FlowerSim(FlowerFactory):
    name = "flower-sim"
    runs = "--engine flower-sim"
    instead = "--engine inprocess"

    def __init__(self, timeout: float = 900.0, wait: float = 300.0):
        self.timeout, self.wait = timeout, wait
        self.grid = None
        self.backend = None

    def check(self, cfg) -> None:
        import importlib.util

        if importlib.util.find_spec("ray") is None:
            raise DataError(f"--engine {self.name} needs Ray: pip install -e \".[simulation]\" "
                            "(flwr[simulation]==1.42.0)")
        super().check(cfg)

    def backend_options(self, run: Run) -> dict:
        return {"site_dir": str(Path(run.out).absolute())}


def train_sim(cfg, out, resume=False, reporter=None, until=None, min_sites=1, factory=None,
              num_cpus: int | None = None):
    """Run (or resume) ``cfg`` into ``out`` on Flower's simulation engine; returns the report
    (None with ``until``), like ``pipeline.train``."""
    factory = factory or FlowerSim()
    run = Run(cfg, out, resume, reporter, factory, min_sites)     # every check before any import
    if resume and until is None:
        done = run.finished_report()
        if done is not None:
            run.rep.note(f"{out} is already finished; nothing to resume (its report follows)")
            return done
    from ..tfquiet import import_tensorflow

    import_tensorflow()          # flwr.simulation imports TensorFlow; quietly, as everywhere else
    from flwr.serverapp import ServerApp
    from flwr.simulation import run_simulation

    from . import client_app
    result = {}
    server_app = ServerApp()

    @server_app.main()
    def main(grid, context) -> None:
        factory.grid = grid
        result["report"] = run.execute(until)

    ray_dir = tempfile.mkdtemp(prefix="fedtiny-ray-")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    os.environ.setdefault("RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO", "0")    # CPU only: silence Ray's tip
    cpus = num_cpus or max(1, min(cfg.devices, os.cpu_count() or 1))
    backend_config = {"init_args": {"num_cpus": cpus, "_temp_dir": ray_dir, "include_dashboard": False,
                                    "_node_ip_address": "127.0.0.1", "logging_level": logging.ERROR,
                                    "log_to_driver": False},
                      "client_resources": {"num_cpus": 1, "num_gpus": 0.0}}
    logging.getLogger("flwr").setLevel(logging.WARNING)
    try:
        run_simulation(server_app=server_app, client_app=client_app.app, num_supernodes=cfg.devices,
                       backend_config=backend_config)
    except RuntimeError as e:
        cause = e.__cause__ or e
        if isinstance(cause, (DataError,)):
            raise cause from None
        raise
    finally:
        try:
            import ray

            if ray.is_initialized():
                ray.shutdown()
        except ImportError:
            pass
        shutil.rmtree(ray_dir, ignore_errors=True)
        run.rep.finish()
    if "report" not in result and until is None:
        raise RunError("the Flower simulation ended without finishing the run (see the log above)")
    return result.get("report")
