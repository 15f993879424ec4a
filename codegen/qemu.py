"""Running a qemu-m4 firmware on QEMU's mps2-an386 machine (what ``fedtiny flash --board qemu-m4``
does instead of an upload).

``QemuBoard(elf, board)`` starts ``qemu-system-arm -M mps2-an386 -nographic -monitor none
-icount shift=0 -serial pty -kernel ELF`` (the board file's ``qemu`` section), reads the pty QEMU
connected UART0 to from its ``char device redirected to /dev/pts/N`` line, and stops QEMU (its
own process, by pid: SIGTERM, then SIGKILL) on ``stop()``, on leaving a ``with`` block, and when
the start fails. ``extra_args`` adds options (the benchmark adds a monitor socket).

``fedtiny flash`` records the running QEMU in ``PROJECT/qemu.json`` (pid, port, ELF) so that
``fedtiny flash --stop`` can stop it later; ``stop_recorded`` only signals a pid whose command
line is that qemu-system-arm with that ELF, so a reused pid is never killed.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import threading
import time
from pathlib import Path

from fedtiny.trainer.rundir import dumps_strict
from .boards import Board
from .errors import CodegenError

STATE_FILE = "qemu.json"
_PTY_RE = re.compile(r"char device redirected to (\S+)")


def qemu_argv(board: Board, elf: Path, exe: str | None = None, extra_args: list[str] | None = None) -> list[str]:
    q = board.qemu
    return ([exe or str(q["system"]), "-M", str(q["machine"])] + [str(a) for a in q["args"]]
            + ["-serial", "pty", "-kernel", str(elf)] + list(extra_args or []))


class QemuBoard:
    """One QEMU process running ``elf``; ``port`` is the pty of its UART0 once started."""

    START_TIMEOUT_S = 120.0     # a hang guard: the wait ends as soon as QEMU names its pty or exits

    def __init__(self, elf: Path, board: Board, extra_args: list[str] | None = None):
        self.elf = Path(elf)
        self.board = board
        self.extra_args = list(extra_args or [])
        self.proc: subprocess.Popen | None = None
        self.port: str | None = None
        self.stderr_lines: list[str] = []

    def start(self) -> "QemuBoard":
        exe = shutil.which(str(self.board.qemu["system"]))
        if exe is None:
            pkgs = " ".join(self.board.qemu.get("debian_packages", ["qemu-system-arm"]))
            raise CodegenError(f"{self.board.qemu['system']} is not installed (apt-get install {pkgs})")
        if not self.elf.is_file():
            raise CodegenError(f"no firmware at {self.elf}; build it first (fedtiny build --board {self.board.name})")
        argv = qemu_argv(self.board, self.elf, exe, self.extra_args)
        self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True, start_new_session=True)
        found = threading.Event()

        def reader():
            assert self.proc is not None and self.proc.stdout is not None
            for line in self.proc.stdout:
                self.stderr_lines.append(line.rstrip("\n"))
                m = _PTY_RE.search(line)
                if m and self.port is None:
                    self.port = m.group(1)
                    found.set()
            found.set()

        threading.Thread(target=reader, name="qemu-output", daemon=True).start()
        try:
            if not found.wait(self.START_TIMEOUT_S) or self.port is None:
                tail = " | ".join(self.stderr_lines[-5:]) or "no output"
                raise CodegenError(f"QEMU did not report its serial pty within {self.START_TIMEOUT_S:g} s: {tail}")
        except BaseException:
            self.stop()
            raise
        return self

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout: float = 5.0) -> None:
        """Stop QEMU (idempotent): SIGTERM, then SIGKILL after ``timeout`` seconds."""
        p = self.proc
        if p is None:
            return
        if p.poll() is None:
            try:
                p.terminate()
                p.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(timeout=timeout)
            except ProcessLookupError:
                pass
        if p.stdout is not None:
            try:
                p.stdout.close()
            except OSError:
                pass

    def __enter__(self) -> "QemuBoard":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


# ----------------------------------------------------------------------------- flash / --stop

def monitor(path, command: str, timeout: float = 10.0) -> str:
    """Send one command to QEMU's human monitor on the unix socket ``path`` (QEMU started with
    ``-monitor unix:PATH,server,nowait``); returns its output up to the next prompt. Waits up to
    ``timeout`` for the socket to accept."""
    import socket

    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(timeout)
    deadline = time.monotonic() + timeout
    while True:
        try:
            s.connect(str(path))
            break
        except OSError:
            if time.monotonic() > deadline:
                s.close()
                raise
            time.sleep(0.05)
    buf = b""

    def until_prompt():
        nonlocal buf
        while b"(qemu)" not in buf:
            chunk = s.recv(65536)
            if not chunk:
                break
            buf += chunk
        out, _, buf = buf.partition(b"(qemu)")
        return out.decode(errors="replace")

    try:
        until_prompt()
        s.sendall(command.encode() + b"\n")
        return until_prompt()
    finally:
        s.close()


def _cmdline(pid: int) -> list[str]:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return [a.decode("utf-8", "replace") for a in raw.split(b"\0") if a]


def _is_our_qemu(pid: int, board: Board, elf: Path) -> bool:
    cmd = _cmdline(pid)
    return bool(cmd) and Path(cmd[0]).name == str(board.qemu["system"]) and str(elf) in cmd


def recorded(project: Path) -> dict | None:
    """The QEMU that ``fedtiny flash`` recorded for ``project``, if the file exists."""
    try:
        return json.loads((Path(project) / STATE_FILE).read_text())
    except (OSError, ValueError):
        return None


def running(project: Path, board: Board) -> dict | None:
    """The recorded QEMU if it is still that process; a stale record is removed."""
    rec = recorded(project)
    if rec is None:
        return None
    if _is_our_qemu(int(rec.get("pid", -1)), board, Path(rec.get("elf", ""))):
        return rec
    (Path(project) / STATE_FILE).unlink(missing_ok=True)
    return None


def stop_recorded(project: Path, board: Board, timeout: float = 5.0) -> dict | None:
    """Stop the QEMU recorded for ``project`` (``fedtiny flash --stop``); None if none runs."""
    rec = running(project, board)
    if rec is None:
        return None
    pid = int(rec["pid"])
    # the record goes first: the serving ``fedtiny flash`` sees QEMU end and must find it gone, or
    # it would report the stop as an unexpected exit (a race seen under load)
    (Path(project) / STATE_FILE).unlink(missing_ok=True)
    try:
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and _is_our_qemu(pid, board, Path(rec["elf"])):
            time.sleep(0.05)
        if _is_our_qemu(pid, board, Path(rec["elf"])):
            os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    (Path(project) / STATE_FILE).unlink(missing_ok=True)
    return rec


def serve(project: Path, board: Board, echo=print, hint: str | None = None,
          stop_command: str | None = None) -> None:
    """``fedtiny flash --board qemu-m4``: start QEMU on the project's ELF, record it, print the
    pty, and run until Ctrl-C / SIGTERM (then stop QEMU) or until QEMU exits."""
    project = Path(project)
    rec = running(project, board)
    if rec is not None:
        raise CodegenError(f"QEMU already runs this firmware on {rec['port']} (pid {rec['pid']}); "
                           f"stop it with: {stop_command or f'fedtiny flash --board {board.name} --stop'}")
    manifest = json.loads((project / "fedtiny_build.json").read_text())
    elf = (project / manifest.get("elf", "build/firmware.elf")).resolve()
    qb = QemuBoard(elf, board)

    def _terminate(signum, frame):
        raise KeyboardInterrupt

    old_term = signal.signal(signal.SIGTERM, _terminate)
    old_int = None
    if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
        old_int = signal.signal(signal.SIGINT, _terminate)   # started in the background by a script
    try:
        qb.start()
        assert qb.proc is not None
        (project / STATE_FILE).write_text(dumps_strict(
            {"pid": qb.proc.pid, "port": qb.port, "elf": str(elf)}, indent=2) + "\n")
        echo(qb.port)
        echo(f"QEMU {board.qemu['machine']} runs {elf} (pid {qb.proc.pid}); its UART0 is {qb.port}; "
             f"latency clock=icount (instructions, not microseconds). Ctrl-C or "
             f"{stop_command or f'fedtiny flash --board {board.name} --stop'} to stop it")
        if hint:
            echo(hint.format(port=qb.port))
        while qb.alive():
            time.sleep(0.2)
        if not (project / STATE_FILE).exists():     # fedtiny flash --stop stopped it
            echo("QEMU stopped")
            return
        raise CodegenError(f"QEMU exited (code {qb.proc.returncode}): {' | '.join(qb.stderr_lines[-5:])}")
    except KeyboardInterrupt:
        pass
    finally:
        qb.stop()
        (project / STATE_FILE).unlink(missing_ok=True)
        signal.signal(signal.SIGTERM, old_term)
        if old_int is not None:
            signal.signal(signal.SIGINT, old_int)
