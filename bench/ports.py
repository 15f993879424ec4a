"""Finding and opening boards' serial ports (pyserial)."""
from __future__ import annotations

import os
import time
from dataclasses import dataclass

import serial
import serial.tools.list_ports

from .link import IO_ERRORS
from .rundata import BenchError

# USB VID:PID -> what it usually is. A board in its bootloader is listed but not benchmarked.
KNOWN_USB_IDS: dict[tuple[int, int], tuple[str, bool]] = {
    (0x2341, 0x005A): ("Arduino Nano 33 BLE", True),
    (0x2341, 0x805A): ("Arduino Nano 33 BLE (bootloader)", False),
    (0x10C4, 0xEA60): ("ESP32 dev board (CP210x)", True),
    (0x1A86, 0x7523): ("ESP32 dev board (CH340)", True),
    (0x1A86, 0x55D4): ("ESP32 dev board (CH9102)", True),
    (0x303A, 0x1001): ("ESP32-S3/C3 native USB", True),
}


@dataclass(frozen=True)
class Board:
    port: str
    vid: int | None
    pid: int | None
    serial_number: str | None
    kind: str
    usable: bool

    @property
    def usb_id(self) -> str:
        return f"{self.vid:04x}:{self.pid:04x}" if self.vid is not None else "-"


def list_boards(include_unknown: bool = False) -> list[Board]:
    """Serial ports whose USB VID:PID is a known board (bootloaders included, marked unusable)."""
    out = []
    for p in serial.tools.list_ports.comports():
        key = (p.vid, p.pid) if p.vid is not None else None
        if key in KNOWN_USB_IDS:
            kind, usable = KNOWN_USB_IDS[key]
        elif include_unknown:
            kind, usable = (p.description or "serial port"), True
        else:
            continue
        out.append(Board(p.device, p.vid, p.pid, p.serial_number, kind, usable))
    return sorted(out, key=lambda b: b.port)


def find_boards() -> list[str]:
    """Ports of all attached boards ready to bench (for ``--all``)."""
    boards = list_boards()
    usable = [b.port for b in boards if b.usable]
    if not usable:
        known = ", ".join(f"{v:04x}:{p:04x}" for v, p in KNOWN_USB_IDS)
        extra = "".join(f"; {b.port} is a {b.kind}" for b in boards if not b.usable)
        raise BenchError(f"no boards found by USB VID:PID (known: {known}){extra}; pass --port PATH")
    return usable


def _usb_identity(port: str) -> tuple | None:
    for p in serial.tools.list_ports.comports():
        if p.device == port and p.vid is not None:
            return (p.vid, p.pid, p.serial_number)
    return None


def open_port(port: str, baud: int, timeout: float = 0.05) -> serial.Serial:
    """Open ``port`` for the protocol (8N1, no flow control). Never at 1200 baud: that is the
    Arduino 'touch' that sends a Nano 33 BLE into its bootloader."""
    if baud == 1200:
        raise BenchError("1200 baud would reset an Arduino into its bootloader; use the protocol baud")
    if port.startswith("/dev/") and not os.path.exists(port):
        avail = ", ".join(p.device for p in serial.tools.list_ports.comports()) or "none"
        raise BenchError(f"port {port} does not exist (serial ports here: {avail})")
    try:
        ser = serial.Serial(port, baudrate=baud, timeout=timeout, write_timeout=2.0)
    except IO_ERRORS + (ValueError,) as e:
        raise BenchError(f"cannot open port {port}: {e}") from None
    return ser


def wait_for_port(port: str, identity: tuple | None, wait: float) -> str | None:
    """After a reset or a lost connection: wait until the board is back (a Nano 33 BLE
    re-enumerates over USB for about a second; it may come back under another name, found by
    its VID:PID and serial number). Returns the port path, or None after ``wait`` seconds."""
    deadline = time.monotonic() + wait
    while True:
        if identity is not None:
            for p in serial.tools.list_ports.comports():
                if (p.vid, p.pid, p.serial_number) == identity:
                    return p.device
        elif os.path.exists(port):
            try:
                serial.Serial(port, timeout=0).close()
                return port
            except IO_ERRORS:
                pass
        if time.monotonic() >= deadline:
            return None
        time.sleep(0.2)
