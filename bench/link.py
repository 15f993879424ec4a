"""A protocol-v3 link over one serial port: line assembly, parsing, commands, resync.

Only lines that pass ``parse_line`` (CRC and field syntax) ever leave this module as messages;
everything else is counted as dropped and a few are kept (shortened) for error messages.

Foreign ports: a line *looks like* a fedtiny frame when it parses, or when it still carries a
frame's start, an ``@`` followed by a protocol message type (``@banner``, ``@ready``, ...): a frame
hit by noise usually keeps that. ``expect_fedtiny()`` arms a check that ends a wait early with
``ForeignPort`` once ``FOREIGN_MIN_LINES`` lines and ``FOREIGN_MIN_S`` seconds have passed without
a single look-alike: the port carries another program's output, or the baud rate is wrong. One
look-alike line disarms it for good, so a noisy link with some intact frames stays as patient as
``--timeout`` and the retries allow.
"""
from __future__ import annotations

import re
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
FOREIGN_MIN_LINES = 20   # lines without a frame look-alike before a port is called foreign ...
FOREIGN_MIN_S = 2.0      # ... and not before this many seconds of listening
_FRAME_START = re.compile(rb"@(?:" + b"|".join(re.escape(t.encode()) for t in sorted(P.MESSAGES)) + rb")\b")


class Disconnected(BenchError):
    """The port went away (USB unplugged, board reset and re-enumerating, emulator stopped)."""


class ForeignPort(BenchError):
    """Input keeps arriving but nothing on the port looks like a fedtiny frame."""


def looks_like_frame(line: bytes) -> bool:
    """True when ``line`` carries the start of a protocol frame (``@`` + a message type)."""
    return _FRAME_START.search(line) is not None


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
        self.lookalikes = 0     # lines that parsed or still carried a frame start
        self._probe: tuple[float, int] | None = None   # (armed at, lines then) of expect_fedtiny

    def expect_fedtiny(self) -> None:
        """Arm the foreign-port check (module docstring) unless a frame look-alike was seen."""
        if self.lookalikes == 0 and self._probe is None:
            self._probe = (time.monotonic(), self.lines)

    def _check_foreign(self) -> None:
        if self._probe is None or self.lookalikes:
            self._probe = None
            return
        since, lines0 = self._probe
        n = self.lines - lines0
        if n >= FOREIGN_MIN_LINES and time.monotonic() - since >= FOREIGN_MIN_S:
            self._probe = None
            raise ForeignPort(f"{self.port}: no fedtiny frame in {n} lines: another program, or a "
                              f"different baud rate?{self.noise_hint()}")

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
                        if looks_like_frame(line):
                            self.lookalikes += 1
                    self._check_foreign()
                    continue
                self.frames += 1
                self.lookalikes += 1
                self._probe = None
                return msg
            if len(self._buf) > MAX_PENDING:
                self.lines += 1          # a "line" of garbage that never ended
                self.dropped += 1
                if looks_like_frame(bytes(self._buf)):
                    self.lookalikes += 1
                self._buf.clear()
                self._check_foreign()
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
