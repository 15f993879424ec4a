"""Driving PlatformIO without ever waiting on the network.

PlatformIO downloads a platform (toolchain, Arduino core) the first time a project needs it; on a
machine without network each such ``pio run`` retries for about a minute before failing. So:

* ``installed_platform(board)`` looks in PlatformIO's core dir (``$PLATFORMIO_CORE_DIR`` or
  ``~/.platformio``) for ``platforms/<name>`` (or ``<name>@<version>``) and its ``platform.json``;
  no subprocess, answers in milliseconds;
* ``pio run`` is only called when the platform is there, and always through a ``Runner`` (a
  callable taking the argv list, returning the exit code), so tests can assert the exact argv.
"""
from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Callable

from .boards import Board

Runner = Callable[[list[str]], int]


def run_command(argv: list[str]) -> int:
    """The default Runner: run ``argv`` with the terminal attached, return its exit code."""
    return subprocess.run(argv, check=False).returncode


def core_dir() -> Path:
    env = os.environ.get("PLATFORMIO_CORE_DIR")
    return Path(env).expanduser() if env else Path.home() / ".platformio"


def find_pio() -> str | None:
    """Path of the ``pio`` (or ``platformio``) executable: on PATH, or beside this Python."""
    for name in ("pio", "platformio"):
        found = shutil.which(name)
        if found:
            return found
    here = Path(sys.executable).parent
    for name in ("pio", "platformio"):
        if (here / name).is_file() and os.access(here / name, os.X_OK):
            return str(here / name)
    return None


def installed_platform(board: Board, core: Path | None = None) -> tuple[Path | None, str]:
    """``(path, note)``: the installed platform folder the board needs, or None and why not.
    A board file with ``platform_version`` requires exactly that version (its platform.json)."""
    core = core_dir() if core is None else core
    name = str(board.pio["platform_name"])
    want = board.pio.get("platform_version")
    root = core / "platforms"
    candidates = sorted(p for p in root.glob(f"{name}*") if p.is_dir()
                        and (p.name == name or p.name.startswith(name + "@"))) if root.is_dir() else []
    seen = []
    for p in candidates:
        try:
            manifest = json.loads((p / "platform.json").read_text())
        except (OSError, ValueError):
            continue
        if manifest.get("name") != name:
            continue
        version = str(manifest.get("version", "?"))
        if want is None or version == str(want):
            return p, f"{name} {version}"
        seen.append(version)
    need = f"{name} {want}" if want else name
    if seen:
        return None, f"PlatformIO platform {need} is not installed in {core} (found {name} {', '.join(seen)})"
    return None, f"PlatformIO platform {need} is not installed in {core}"


def compile_argv(pio: str, project: Path, env: str) -> list[str]:
    return [pio, "run", "-d", str(project), "-e", env]


def upload_argv(pio: str, project: Path, env: str, port: str | None = None) -> list[str]:
    argv = [pio, "run", "-d", str(project), "-e", env, "-t", "upload"]
    if port:
        argv += ["--upload-port", port]
    return argv


def shell_join(argv: list[str]) -> str:
    """The argv as one copy-pasteable shell command."""
    return shlex.join(argv)
