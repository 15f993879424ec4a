"""Compiling a qemu-m4 project with the GNU Arm toolchain directly (no PlatformIO).

PlatformIO has no platform for QEMU's mps2-an386 machine, so a board file with ``"build":
"arm-none-eabi-gcc"`` names the compiler, flags and linker script (``toolchain``), and
``compile_argv`` turns them into one command run from the project folder (paths relative, so the
command in ``fedtiny_build.json`` and ``build.sh`` works there by hand). ``size_of`` reads the
section sizes of the ELF with ``arm-none-eabi-size -A``.
"""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from .boards import Board
from .errors import CodegenError

ELF = "build/firmware.elf"
MAP = "build/firmware.map"


def find_tool(name: str) -> str | None:
    return shutil.which(name)


def sources(files) -> list[str]:
    """The C sources of a project (``files``: its relative paths), in a fixed order."""
    return sorted(p for p in files if p.endswith(".c"))


def compile_argv(board: Board, c_sources: list[str], cc: str | None = None) -> list[str]:
    """The compiler command, relative to the project folder."""
    tc = board.toolchain
    return ([cc or str(tc["cc"])] + [str(f) for f in tc["cflags"]] + ["-Iinclude"] + c_sources
            + [f"-Tboard/{tc['linker_script']}", f"-Wl,--defsym=FT_STACK_BYTES={int(tc['stack_bytes'])}"]
            + [str(f) for f in tc["ldflags"]] + [f"-Wl,-Map={MAP}", "-o", ELF])


def install_hint(board: Board) -> str:
    pkgs = list(board.toolchain.get("debian_packages", [])) or ["gcc-arm-none-eabi", "libnewlib-arm-none-eabi"]
    return f"apt-get install {' '.join(pkgs)}"


def compile_project(project: Path, board: Board, c_sources: list[str]) -> str:
    """Compile in ``project``; returns the command as run. Raises CodegenError with the
    compiler's last lines if it fails, or if the compiler is missing."""
    cc = find_tool(str(board.toolchain["cc"]))
    argv = compile_argv(board, c_sources)
    if cc is None:
        raise CodegenError(f"{board.toolchain['cc']} is not installed ({install_hint(board)})")
    (project / "build").mkdir(exist_ok=True)
    r = subprocess.run([cc] + argv[1:], cwd=project, capture_output=True, text=True)
    if r.returncode != 0:
        tail = " | ".join((r.stderr or r.stdout).strip().splitlines()[-6:])
        raise CodegenError(f"{board.toolchain['cc']} failed (exit {r.returncode}): {tail}")
    return shell_join(argv)


def shell_join(argv: list[str]) -> str:
    import shlex

    return shlex.join(argv)


def size_of(elf: Path, size_tool: str = "arm-none-eabi-size") -> dict[str, int]:
    """Section sizes of ``elf`` (``size -A``): text (= .text + .ARM.exidx, flash), data (.data,
    flash and RAM), bss (.bss without the stack), stack (the reserved .stack block)."""
    exe = find_tool(size_tool)
    if exe is None:
        raise CodegenError(f"{size_tool} is not installed")
    out = subprocess.run([exe, "-A", str(elf)], capture_output=True, text=True, check=True).stdout
    sec = {}
    for line in out.splitlines():
        parts = line.split()
        if len(parts) >= 2 and parts[0].startswith(".") and parts[1].isdigit():
            sec[parts[0]] = int(parts[1])
    return dict(text=sec.get(".text", 0) + sec.get(".ARM.exidx", 0), data=sec.get(".data", 0),
                bss=sec.get(".bss", 0), stack=sec.get(".stack", 0))


def symbols(elf: Path, nm_tool: str = "arm-none-eabi-nm") -> dict[str, int]:
    """Addresses of the ELF's symbols (``nm``)."""
    exe = find_tool(nm_tool)
    if exe is None:
        raise CodegenError(f"{nm_tool} is not installed")
    out = subprocess.run([exe, str(elf)], capture_output=True, text=True, check=True).stdout
    res = {}
    for line in out.splitlines():
        parts = line.split()
        if len(parts) == 3:
            res[parts[2]] = int(parts[0], 16)
    return res
