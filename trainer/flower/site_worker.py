"""The long-lived worker of a deployed site (``fedtiny site``): one process that imports
TensorFlow once, loads the site's data once and answers every request the per-message
``flwr-clientapp`` processes hand it.

Flower 1.42 runs each message in a fresh ``flwr-clientapp`` process (``flwr/supernode/runtime/
run_clientapp.py`` pulls one task, pushes one reply and exits, in both ``--isolation subprocess``
and ``process`` modes; ``flower-superexec`` starts one per task), so the state that must outlive a
message lives here. Hand-over: a Unix socket in the site's folder (``multiprocessing.connection``,
authenticated with a random key kept in a 0600 file); nothing of it leaves the machine.
"""
from __future__ import annotations

import os
import secrets
import threading
import traceback
from multiprocessing.connection import Client, Listener
from pathlib import Path


def make_key(path: Path) -> bytes:
    """A fresh random key written to ``path`` readable by this user only."""
    key = secrets.token_hex(32).encode()
    path = Path(path)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(key)
    return key


def call(address: str, key_file: str, request: tuple):
    """Send one request to the worker at ``address``; returns its result or raises its error."""
    key = Path(key_file).read_bytes()
    with Client(address, family="AF_UNIX", authkey=key) as conn:
        conn.send(request)
        status, value = conn.recv()
    if status != "ok":
        raise RuntimeError(value)
    return value


class SiteWorker:
    """Serves ``SiteService.handle`` on a Unix socket until ``stop()``; ``log`` gets one line per
    request (kind, device, phase, round), and "refused (wrong dataset: ...)" once per reason when
    the site refuses a run (``SiteService.greet``: a hello answers (device, reason or None))."""

    def __init__(self, service, address: Path, key: bytes, log=print):
        self.service, self.address, self.key, self.log = service, str(address), key, log
        Path(self.address).unlink(missing_ok=True)
        self.listener = Listener(self.address, family="AF_UNIX", authkey=key)
        os.chmod(self.address, 0o600)
        self._stop = threading.Event()
        self._refused: set[str] = set()
        self.thread = threading.Thread(target=self._serve, name="site-worker", daemon=True)

    def start(self) -> "SiteWorker":
        self.thread.start()
        return self

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn = self.listener.accept()
            except (OSError, EOFError):
                if self._stop.is_set():
                    return
                continue
            except Exception:   # a peer without the key (AuthenticationError): refuse, go on
                continue
            threading.Thread(target=self._one, args=(conn,), daemon=True).start()

    def _one(self, conn) -> None:
        with conn:
            try:
                kind, weights, config, run, device = conn.recv()
                if kind == "hello":
                    result = self.service.greet(run)
                    if result[1] is not None and result[1] not in self._refused:   # one line per reason
                        self._refused.add(result[1])
                        self.log(f"refused ({result[1]})")
                else:
                    self.log(f"request {kind} device {device} phase {config.get('phase')} "
                             f"round {config.get('round', config.get('tour', '-'))}")
                    result = self.service.handle(kind, weights, config, run, device)
                    self.log(f"answered {kind} device {device} phase {config.get('phase')} "
                             f"round {config.get('round', config.get('tour', '-'))} (process {os.getpid()})")
                conn.send(("ok", result))
            except Exception as e:  # the error goes back to Flower as the ClientApp's error reply
                self.log(f"error: {type(e).__name__}: {e}")
                try:
                    conn.send(("error", f"{type(e).__name__}: {e}\n{traceback.format_exc(limit=3)}"))
                except OSError:
                    pass

    def stop(self) -> None:
        self._stop.set()
        try:
            self.listener.close()
        except OSError:
            pass
        Path(self.address).unlink(missing_ok=True)
