"""Processes of a loopback Flower deployment for tests: a SuperLink, ``fedtiny site`` processes and
``fedtiny server``, each in its own process group on 127.0.0.1 with a free port, waited for, and
all stopped when the ``Cluster`` context ends, also on failure.

Flower starts processes of its own (SuperExec, per-message ClientApps and ServerApps), some in
sessions of their own; every process a test starts carries the environment variable
``FEDTINY_TEST_PROC=<cluster id>:<name>``, which all its descendants inherit, so ``kill_tree``
finds and ends exactly the processes of one started command (a crashed site machine), and the
cluster's exit ends every process it caused."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

MARK = "FEDTINY_TEST_PROC"

SMALL_JSON = {"samples_per_device": 160, "public_samples": 300, "phase0_epochs": 5, "phase3_epochs": 5,
              "reference_epochs": 5}


def fedtiny_cmd(*args) -> list[str]:
    return [sys.executable, "-c", "from fedtiny.cli import run; run()", *args]


class Cluster:
    def __init__(self, root: Path):
        self.root = Path(root)
        self.procs: list[subprocess.Popen] = []
        self.sites: dict[int, subprocess.Popen] = {}
        self.id = uuid.uuid4().hex

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
        self.kill_tree(None)

    def marked(self, name: str | None) -> list[int]:
        """Pids of the live processes started (directly or not) by command ``name`` (None: any)."""
        want = f"{MARK}={self.id}:{name}".encode() if name else f"{MARK}={self.id}:".encode()
        out = []
        for d in Path("/proc").iterdir():
            if not d.name.isdigit() or int(d.name) == os.getpid():
                continue
            try:
                env = (d / "environ").read_bytes().split(b"\0")
            except OSError:
                continue
            if any(e == want or (name is None and e.startswith(want)) for e in env):
                out.append(int(d.name))
        return out

    def kill_tree(self, name: str | None) -> None:
        """SIGKILL every process of command ``name`` (None: of the whole cluster), as a crash would."""
        for pid in self.marked(name):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    @staticmethod
    def kill(p: subprocess.Popen, sig) -> None:
        try:
            os.killpg(p.pid, sig)          # the process and everything it started
        except (ProcessLookupError, PermissionError):
            pass

    def start(self, cmd: list[str], log: str, env: dict | None = None, name: str | None = None) -> subprocess.Popen:
        from fedtiny.trainer.flower.processes import child_env

        f = open(self.root / log, "ab")
        p = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                             start_new_session=True,
                             env=child_env(**(env or {}), **{MARK: f"{self.id}:{name or log}"}))
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

    def site(self, k: int, link_port: int, timeout: float = 180, data: Path | None = None) -> subprocess.Popen:
        """Start ``fedtiny site`` for built-in electrical device k, or for the device folder ``data``;
        return once its SuperNode listens."""
        from fedtiny.trainer.flower.processes import free_port, wait_port

        port = free_port()
        source = ["--data", str(data)] if data is not None else ["--builtin", f"electrical:{k}"]
        p = self.start(fedtiny_cmd("site", *source, "--server", f"127.0.0.1:{link_port}",
                                   "--insecure", "--work", str(self.root / f"site{k}"), "--port", str(port)),
                       f"site{k}.log", name=f"site{k}")
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
