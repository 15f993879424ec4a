"""A protocol-v1 link over one serial port: line assembly, parsing, commands, resync.

Only lines that pass ``parse_line`` (CRC and field syntax) ever leave this module as messages;
everything else is counted as dropped and a few are kept (shortened) for error messages.
"""
from __future__ import annotations

import time
from collections import deque

import serial

try:                                   # pyserial's POSIX backend lets termios errors through
    from termios import error as _TermiosError
except ImportError:                    # Windows
    class _TermiosError(Exception):
        pass

from fedtiny.firmware import protocol as P

from .rundata import BenchError

MAX_PENDING = 16384  # bytes without a newline before the buffer is treated as garbage
IO_ERRORS = (serial.SerialException, OSError, _TermiosError)


class Disconnected(BenchError):
    """The port went away (USB unplugged, board reset and re-enumerating, emulator stopped)."""


class SerialLink:
    def __init__(self, ser: serial.Serial, port: str):
        self.ser = ser
        self.port = port
        self._buf = bytearray()
        self.lines = 0          # complete lines received
        self.frames = 0         # lines that parsed as protocol messages
        self.dropped = 0        # lines that did not (noise, corrupted, unknown, truncated)
        self.noise = deque(maxlen=3)
        self.last_byte = time.monotonic()

    # ------------------------------------------------------------------ io
    def _read_some(self) -> bytes:
        try:
            n = self.ser.in_waiting
            data = self.ser.read(n if n > 0 else 1)
        except IO_ERRORS as e:
            raise Disconnected(f"{self.port}: device disconnected ({e})") from None
        if data:
            self.last_byte = time.monotonic()
        return data

    def write(self, data: bytes) -> None:
        try:
            for i in range(0, len(data), 256):   # small chunks: boards drain a 64-256 byte RX FIFO
                self.ser.write(data[i:i + 256])
            self.ser.flush()
        except IO_ERRORS as e:
            raise Disconnected(f"{self.port}: device disconnected while writing ({e})") from None

    def send(self, name: str, payload=None) -> None:
        self.write(P.encode_command(name, payload))

    def discard_input(self) -> None:
        try:
            self.ser.reset_input_buffer()
        except IO_ERRORS as e:
            raise Disconnected(f"{self.port}: device disconnected ({e})") from None
        self._buf.clear()

    # ------------------------------------------------------------------ messages
    def next_message(self, idle: float, deadline: float | None = None):
        """The next intact message; None when no byte arrived for ``idle`` seconds or the
        absolute ``deadline`` (time.monotonic) passed."""
        start = time.monotonic()
        self.last_byte = max(self.last_byte, start)
        while True:
            nl = self._buf.find(b"\n")
            if nl >= 0:
                line = bytes(self._buf[:nl + 1])
                del self._buf[:nl + 1]
                self.lines += 1
                msg = P.parse_line(line)
                if msg is None:
                    if line.strip():
                        self.dropped += 1
                        self.noise.append(line.strip()[:60].decode("ascii", "replace"))
                    continue
                self.frames += 1
                return msg
            if len(self._buf) > MAX_PENDING:
                self.dropped += 1
                self._buf.clear()
            now = time.monotonic()
            if now - self.last_byte >= idle or (deadline is not None and now >= deadline):
                return None
            data = self._read_some()
            if data:
                self._buf.extend(data)

    def noise_hint(self) -> str:
        if not self.noise:
            return ""
        return f" (last unrecognized line: {self.noise[-1]!r})"
