"""Only fedtiny's app runs here: a gate in front of Flower's SuperExec, on the server and at every site.

Flower 1.42 executes whatever app (FAB) a run was submitted with: the SuperLink's SuperExec starts
its ServerApp, each SuperNode's SuperExec starts its ClientApp, both by spawning the console script
``flower-superexec`` found on PATH. Its own check (``flower-supernode --trusted-entities``) only
accepts FABs signed through Flower Hub (the SuperLink must mark them ``valid_license``), which an
offline federation cannot use. So fedtiny puts its own ``flower-superexec`` first on the PATH of the
SuperLink and SuperNodes it starts: Flower's SuperExec unchanged, except that a task whose FAB is not
fedtiny's is never launched. A FAB is a zip with fixed timestamps (``flwr.cli.build``), so the hash
of fedtiny's app (a pyproject naming the installed ``fedtiny.trainer.flower`` components) is the
same wherever this fedtiny version is installed: each end computes it itself (``fab_sha256``),
nothing has to be copied. A refused task is logged, one line per run, in the file named by
``FEDTINY_REFUSALS`` (``fedtiny site`` echoes it) and on stderr; no code of the foreign app, and no
path or key of the site (its node config), is ever handed to it.
"""
from __future__ import annotations

import hashlib
import os
import sys
import tempfile
import time
from pathlib import Path

ENV_ALLOWED = "FEDTINY_ALLOWED_FAB"
ENV_REFUSALS = "FEDTINY_REFUSALS"
TASK_POLL_ENV, TASK_POLL_S = "FLWR_SUPEREXEC_TASK_POLL_INTERVAL", "0.2"


def fab_sha256() -> str:
    """SHA-256 (hex) of the FAB ``flwr run`` builds from fedtiny's app folder (``processes.write_app``)."""
    from flwr.cli.build import build_fab_from_disk

    from .processes import write_app

    with tempfile.TemporaryDirectory(prefix="fedtiny-app-") as d:
        return hashlib.sha256(build_fab_from_disk(write_app(Path(d) / "app"))).hexdigest()


def refusal(fab_hash: str | None, allowed: set[str]) -> str | None:
    """Why a task with FAB hash ``fab_hash`` must not run (None when it may)."""
    if not fab_hash:
        return "its app has no FAB hash"
    if fab_hash not in allowed:
        return f"its app (FAB sha256 {fab_hash[:12]}...) is not fedtiny's ({', '.join(h[:12] for h in sorted(allowed))}...)"
    return None


def install(folder: Path, refusals: Path) -> dict:
    """Write the gate's ``flower-superexec`` into ``folder``; returns the environment additions that
    make a Flower process started with them use it (PATH first, the allowed hash, the refusal log)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    script = folder / "flower-superexec"
    tmp = folder / ".flower-superexec.tmp"
    tmp.write_text(f"#!{sys.executable}\nfrom fedtiny.trainer.flower.gate import main\nmain()\n")
    tmp.chmod(0o755)
    tmp.replace(script)
    venv_bin = str(Path(sys.executable).parent)
    return {"PATH": os.pathsep.join([str(folder), venv_bin, os.environ.get("PATH", "")]),
            ENV_ALLOWED: fab_sha256(), ENV_REFUSALS: str(Path(refusals).absolute()),
            # the SuperExec looks for a task to start every second by default; every request a site
            # answers waits for that look, so look every 0.2 s (a local call; Flower's own setting)
            TASK_POLL_ENV: os.environ.get(TASK_POLL_ENV, TASK_POLL_S)}


def main() -> None:
    """``flower-superexec`` with the gate (module doc): Flower's command, its plugin's ``launch_task``
    wrapped."""
    from flwr.supercore.cli.flower_superexec import flower_superexec
    from flwr.supercore.superexec import run_superexec as rs
    from flwr.supercore.superexec.executor import LaunchResult

    allowed = {h for h in os.environ.get(ENV_ALLOWED, "").split(",") if h}
    log_path = os.environ.get(ENV_REFUSALS)
    refused_runs: set[int] = set()

    class Gated(rs.AutoExecPlugin):
        def launch_task(self, token, task):
            why = refusal(getattr(task, "fab_hash", "") or "", allowed)
            if why is None:
                return super().launch_task(token, task)
            if task.run_id not in refused_runs:         # a refused task is offered again: log it once
                refused_runs.add(task.run_id)
                line = f"refused run {task.run_id} (wrong run): {why}"
                print(f"fedtiny gate: {line}", file=sys.stderr, flush=True)
                if log_path:
                    with open(log_path, "a") as f:
                        f.write(f"{time.strftime('%H:%M:%S')} {line}\n")
            return LaunchResult.failed(why)

    rs.AutoExecPlugin = Gated
    sys.argv[0] = "flower-superexec"
    flower_superexec()


if __name__ == "__main__":
    main()
