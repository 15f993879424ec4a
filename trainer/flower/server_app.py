"""Our Flower ``ServerApp`` (``app``) for deployment: ``fedtiny server`` submits it with
``flwr run`` and the SuperLink runs it (in a ``flwr-serverapp`` process on the server machine).

Its ``main`` reads the job file named by the run config key ``job`` (written by ``fedtiny
server``: the TrainConfig, the run directory, resume, --min-sites, --timeout, --wait), runs the
same ``pipeline.Run`` as ``fedtiny train`` with a ``FlowerBackend`` on Flower's grid, and writes
``status.json`` beside the job file: ``{"ok": true}`` or ``{"ok": false, "error": "..."}``
(what ``fedtiny server`` reports). The server loads the public pool only. A job of kind
``heads`` (``fedtiny server --board-run``) runs ``head_rounds.run_heads_job`` instead.
"""
from __future__ import annotations

import json
import os
import sys
import traceback
from pathlib import Path

from flwr.app import Context
from flwr.serverapp import Grid, ServerApp

from ..pipeline import Reporter, Run
from ..rundir import atomic_write_json
from .factory import FlowerFactory

app = ServerApp()


class PrintReporter(Reporter):
    """Progress as plain lines (they reach ``fedtiny server`` through ``flwr run --stream``)."""

    def start(self, label: str, total: int) -> None:
        print(f"fedtiny: {label} ({total})", flush=True)

    def note(self, text: str) -> None:
        print(f"fedtiny: {text}", flush=True)


class Deployed(FlowerFactory):
    """Sites are Flower SuperNodes reached through ``grid``."""

    name = "flower"
    runs = "a federation"

    def __init__(self, grid, timeout: float, wait: float, nodes: dict | None = None):
        self.grid, self.timeout, self.wait = grid, timeout, wait
        self.nodes = {int(d): int(n) for d, n in nodes.items()} if nodes else None
        self.backend = None

    def backend_options(self, run: Run) -> dict:
        return {"registered": self.nodes} if self.nodes else {}


def watch(pid: int) -> None:
    """End this process, as a kill would, once process ``pid`` (the ``fedtiny server`` that
    submitted the job) is gone: a killed server must not leave its run going on without it (a
    ``--resume`` would then write beside it). Finished steps are checkpointed, so nothing is lost."""
    import threading
    import time

    def loop() -> None:
        while True:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                print("fedtiny: the fedtiny server that submitted this run is gone; stopping", flush=True)
                os._exit(1)
            except PermissionError:
                pass
            time.sleep(1.0)

    threading.Thread(target=loop, name="server-watch", daemon=True).start()


def run_job(grid, job_path: Path) -> dict:
    """Execute one job file; returns the status written to ``status.json``."""
    from ..config import TrainConfig

    job = json.loads(Path(job_path).read_text())
    if job.get("watch_pid"):
        watch(int(job["watch_pid"]))
    if job.get("kind") == "heads":           # fedtiny server --board-run: board sites, head rounds
        from .head_rounds import run_heads_job

        run_heads_job(grid, job, PrintReporter().note)
        return {"ok": True}
    cfg = TrainConfig.from_dict(job["cfg"])
    factory = Deployed(grid, job["timeout"], job["wait"], job.get("nodes"))
    run = Run(cfg, Path(job["out"]), job["resume"], PrintReporter(), factory, job["min_sites"])
    done = run.finished_report() if job["resume"] else None
    if done is None:
        run.execute()
    return {"ok": True}


@app.main()
def main(grid: Grid, context: Context) -> None:
    job_path = Path(str(context.run_config["job"]))
    status_path = job_path.with_name("status.json")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    try:
        status = run_job(grid, job_path)
    except Exception as e:       # the one line fedtiny server prints; the trace goes to the log
        traceback.print_exc(file=sys.stdout)
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        status = {"ok": False, "error": msg, "type": type(e).__name__}
    atomic_write_json(status_path, status)
