"""Processes of a loopback Flower deployment for tests: a SuperLink, ``fedtiny site`` processes and
``fedtiny server``, each in its own process group on 127.0.0.1 with a free port, waited for, and
all stopped (SIGTERM, then SIGKILL, whole groups) when the ``Cluster`` context ends, also on
failure."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

SMALL_JSON = {"samples_per_device": 160, "public_samples": 300, "phase0_epochs": 5, "phase3_epochs": 5,
              "reference_epochs": 5}


def fedtiny_cmd(*args) -> list[str]:
    return [sys.executable, "-c", "from fedtiny.cli import run; run()", *args]


class Cluster:
    def __init__(self, root: Path):
        self.root = Path(root)
        self.procs: list[subprocess.Popen] = []
        self.sites: dict[int, subprocess.Popen] = {}

    def __enter__(self) -> "Cluster":
        return self

    def __exit__(self, *exc) -> None:
        for p in reversed(self.procs):
            self.kill(p, signal.SIGTERM)
        deadline = time.monotonic() + 20
        for p in self.procs:
            try:
                p.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
            self.kill(p, signal.SIGKILL)

    @staticmethod
    def kill(p: subprocess.Popen, sig) -> None:
        try:
            os.killpg(p.pid, sig)          # the process and everything it started
        except (ProcessLookupError, PermissionError):
            pass

    def start(self, cmd: list[str], log: str, env: dict | None = None) -> subprocess.Popen:
        from fedtiny.trainer.flower.processes import child_env

        f = open(self.root / log, "ab")
        p = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                             start_new_session=True, env=child_env(**(env or {})))
        f.close()
        self.procs.append(p)
        return p

    def superlink(self) -> int:
        from fedtiny.trainer.flower.processes import free_port, superlink_cmd, wait_port

        port = free_port()
        home = self.root / "link-home"
        home.mkdir(exist_ok=True)
        p = self.start(superlink_cmd("127.0.0.1", port, self.root / "link.db"), "superlink.log",
                       {"FLWR_HOME": str(home)})
        wait_port("127.0.0.1", port, 120, p, "flower-superlink", self.root / "superlink.log")
        return port

    def site(self, k: int, link_port: int, timeout: float = 180) -> subprocess.Popen:
        """Start ``fedtiny site`` for built-in electrical device k; return once its SuperNode listens."""
        from fedtiny.trainer.flower.processes import free_port, wait_port

        port = free_port()
        p = self.start(fedtiny_cmd("site", "--builtin", f"electrical:{k}", "--server", f"127.0.0.1:{link_port}",
                                   "--insecure", "--work", str(self.root / f"site{k}"), "--port", str(port)),
                       f"site{k}.log")
        wait_port("127.0.0.1", port, timeout, p, f"site {k}", self.root / f"site{k}.log")
        self.sites[k] = p
        return p

    def small_config(self, **over) -> Path:
        path = self.root / "small.json"
        path.write_text(json.dumps({**SMALL_JSON, **over}))
        return path


def wait_for(predicate, timeout: float, what: str, poll: float = 0.5):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = predicate()
        if v:
            return v
        time.sleep(poll)
    raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
