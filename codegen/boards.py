"""Board facts as data: one JSON file per board under ``boards/`` (package ``fedtiny.boards``).

``load_board(name_or_path)`` accepts a built-in board name (``esp32dev``, ``nano33ble``,
``qemu-m4``) or a path to a user's own board JSON with the same fields. A board builds either with
PlatformIO (``"build": "platformio"``, the default: the ``platformio`` section is required) or
directly with the GNU Arm toolchain (``"build": "arm-none-eabi-gcc"``: the ``toolchain`` and
``qemu`` sections are required; qemu-m4, the emulated Cortex-M4 that QEMU's mps2-an386 machine
provides, for which no PlatformIO platform exists). ``runtimes`` lists the runtimes a board can be
built with (``tflm``, ``compiled``; default both, the first is the default).
``platformio_ini(boards)`` renders the PlatformIO envs of those boards; the repo-root
``platformio.ini`` is exactly ``platformio_ini(every PlatformIO board)`` (regenerate with
``python -m fedtiny.codegen.boards``), and each generated project gets the env of its board.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from .errors import CodegenError

REQUIRED = ("name", "title", "mcu", "cpu", "clock_mhz", "ram_bytes", "flash_bytes",
            "tflm", "serial_baud", "usb_ids", "native_usb", "serial_wait_ms", "arena_on_heap",
            "reset_statement", "budget")
REQUIRED_PIO = ("platform", "platform_name", "board", "framework", "lib_deps", "build_flags")
REQUIRED_BUDGET = ("flash_bytes", "ram_bytes", "runtime_flash_bytes", "runtime_ram_bytes")
REQUIRED_TOOLCHAIN = ("cc", "size", "cflags", "ldflags", "linker_script", "board_support", "stack_bytes")
REQUIRED_QEMU = ("system", "machine", "args", "sysclk_hz", "instructions_per_tick")
BUILD_PLATFORMIO = "platformio"
BUILD_GCC_ARM = "arm-none-eabi-gcc"
RUNTIMES = ("tflm", "compiled")


@dataclass(frozen=True)
class Board:
    """A board file's content (``data``) plus where it came from."""

    data: dict
    path: Path

    @property
    def name(self) -> str:
        return str(self.data["name"])

    @property
    def env(self) -> str:
        """PlatformIO env name in platformio.ini (the board name)."""
        return self.name

    @property
    def pio(self) -> dict:
        return self.data["platformio"]

    @property
    def build_system(self) -> str:
        """``platformio`` or ``arm-none-eabi-gcc``."""
        return str(self.data.get("build", BUILD_PLATFORMIO))

    @property
    def uses_platformio(self) -> bool:
        return self.build_system == BUILD_PLATFORMIO

    @property
    def runtimes(self) -> list[str]:
        """Runtimes this board can be built with; the first is the default."""
        return list(self.data.get("runtimes", RUNTIMES))

    @property
    def default_runtime(self) -> str:
        return self.runtimes[0]

    @property
    def toolchain(self) -> dict:
        return self.data["toolchain"]

    @property
    def qemu(self) -> dict:
        return self.data["qemu"]

    @property
    def clock(self) -> str:
        """The protocol's clock label of this board's latency (``device``, or ``icount``)."""
        return str(self.data.get("clock", "device"))

    @property
    def budget(self) -> dict:
        return self.data["budget"]

    @property
    def headers(self) -> list[str]:
        return list(self.data["tflm"].get("headers", []))

    def describe(self) -> str:
        d = self.data
        return f"{d['title']}, {d['mcu']} {d['cpu']} {d['clock_mhz']} MHz"


def boards_dir() -> Path:
    """Folder of the built-in board files (works for editable and normal installs)."""
    try:
        from importlib.resources import files

        return Path(str(files("fedtiny.boards")))
    except (ModuleNotFoundError, TypeError):  # pragma: no cover - source checkout without install
        return Path(__file__).resolve().parent.parent / "boards"


def board_names() -> list[str]:
    return sorted(p.stem for p in boards_dir().glob("*.json"))


def _validate(data: dict, path: Path) -> None:
    missing = [k for k in REQUIRED if k not in data]
    build = data.get("build", BUILD_PLATFORMIO)
    if build == BUILD_PLATFORMIO:
        if "platformio" not in data:
            missing.append("platformio")
        missing += [f"platformio.{k}" for k in REQUIRED_PIO if k not in data.get("platformio", {})]
    elif build == BUILD_GCC_ARM:
        for sec, keys in (("toolchain", REQUIRED_TOOLCHAIN), ("qemu", REQUIRED_QEMU)):
            if sec not in data:
                missing.append(sec)
            missing += [f"{sec}.{k}" for k in keys if k not in data.get(sec, {})]
    else:
        raise CodegenError(f"board file {path}: build {build!r} must be {BUILD_PLATFORMIO!r} or {BUILD_GCC_ARM!r}")
    missing += [f"budget.{k}" for k in REQUIRED_BUDGET if k not in data.get("budget", {})]
    if missing:
        raise CodegenError(f"board file {path} lacks field(s): {', '.join(missing)}")
    runtimes = data.get("runtimes", list(RUNTIMES))
    if not isinstance(runtimes, list) or not runtimes or any(r not in RUNTIMES for r in runtimes):
        raise CodegenError(f"board file {path}: runtimes {runtimes!r} must be a non-empty list of {', '.join(RUNTIMES)}")
    if build == BUILD_GCC_ARM and "tflm" in runtimes:
        raise CodegenError(f"board file {path}: a {BUILD_GCC_ARM} board cannot list the tflm runtime "
                           f"(fedtiny builds TFLM only through PlatformIO's lib_deps)")
    name = str(data["name"])
    if not name or not all(c.isalnum() or c in "_-" for c in name):
        raise CodegenError(f"board file {path}: name {name!r} must be letters, digits, '_' or '-'")


def load_board(name_or_path: str | Path) -> Board:
    """A built-in board by name, or a board JSON file by path. Raises CodegenError otherwise."""
    s = str(name_or_path)
    if s.endswith(".json") or "/" in s or "\\" in s:
        path = Path(s)
        if not path.is_file():
            raise CodegenError(f"board file {path} does not exist")
    else:
        path = boards_dir() / f"{s}.json"
        if not path.is_file():
            raise CodegenError(f"unknown board {s!r} (built-in boards: {', '.join(board_names())}; "
                               f"or pass a path to a board .json file)")
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise CodegenError(f"cannot read board file {path}: {e}") from None
    if not isinstance(data, dict):
        raise CodegenError(f"board file {path} is not a JSON object")
    _validate(data, path)
    return Board(data, path)


def all_boards() -> list[Board]:
    return [load_board(n) for n in board_names()]


def env_lines(board: Board) -> list[str]:
    """The ``[env:NAME]`` section of one board, as lines."""
    p = board.pio
    lines = [f"[env:{board.env}]",
             f"platform = {p['platform']}",
             f"board = {p['board']}",
             f"framework = {p['framework']}",
             f"monitor_speed = {int(board.data['serial_baud'])}"]
    if p["lib_deps"]:
        lines.append("lib_deps =")
        lines += [f"    {dep}" for dep in p["lib_deps"]]
    if p["build_flags"]:
        lines.append("build_flags =")
        lines += [f"    {flag}" for flag in p["build_flags"]]
    return lines


def platformio_ini(boards: list[Board], header: str) -> str:
    """A platformio.ini with one env per board, in the given order; ``header`` becomes comments."""
    out = [f"; {line}".rstrip() for line in header.splitlines()]
    out += ["", "[platformio]", f"default_envs = {', '.join(b.env for b in boards)}"]
    for b in boards:
        out += [""] + env_lines(b)
    return "\n".join(out) + "\n"


ROOT_INI_HEADER = """\
fedtiny: the PlatformIO envs of every PlatformIO board file under boards/ (one env per board;
qemu-m4 builds with arm-none-eabi-gcc directly and has no env).
GENERATED by `python -m fedtiny.codegen.boards` from boards/*.json; do not edit by hand.
`fedtiny build` writes the env of the chosen board into each generated firmware project;
build and upload from that project folder, not from here."""


def root_platformio_ini() -> str:
    return platformio_ini([b for b in all_boards() if b.uses_platformio], ROOT_INI_HEADER)


if __name__ == "__main__":  # pragma: no cover - maintenance entry point
    import sys

    target = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parent.parent / "platformio.ini"
    target.write_text(root_platformio_ini())
    print(f"wrote {target}")
