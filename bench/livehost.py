"""The host side of live mode and capture (protocol v3): ``fedtiny monitor`` and ``fedtiny capture``.

Both open the port and handshake as the bench does (``host._Session``: ``info`` -> banner, version
check), require a firmware built with sensor input (banner ``input=sensor``), and always end the
stream with ``stop`` (also on Ctrl-C or an error), waiting a bounded time for its ``ready``.

Capture checks every line's CRC (a damaged line never reaches this module: ``SerialLink``) and the
continuity of the frame counter: every frame index 0..N-1 must be in exactly one ``frames`` line or
one ``gap`` line. Frames the device lost (``gap``) and frames whose line was damaged on the link
(an index no line covers) are both gaps: reported, never interpolated. ``split`` (default) writes
each stretch between gaps as its own recording; ``refuse`` writes nothing.
"""
from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from fedtiny.firmware import protocol as P

from .host import READY_GRACE, _Session
from .link import Disconnected
from .rundata import BenchError

MIXED_UNIT = "mixed"      # a stream whose channels have different scales or units


class LiveSession:
    """One port in live or capture mode."""

    def __init__(self, port: str, baud: int = P.DEFAULT_BAUD, timeout: float = 5.0):
        self.s = _Session(port, baud, timeout, retries=3, reconnect_wait=0.0, max_reconnects=0)
        self.timeout = float(timeout)
        self.streaming = False

    def __enter__(self) -> "LiveSession":
        try:
            self.s.open()
            self.banner = self.s.handshake()
        except Disconnected as e:
            self.s.close()
            raise BenchError(str(e)) from None
        except BaseException:
            self.s.close()
            raise
        if self.banner.input != "sensor":
            self.s.close()
            raise BenchError(f"{self.s.port}: the firmware classifies its embedded windows (input="
                             f"{self.banner.input}); build it with --input sensor for live mode and capture")
        return self

    def __exit__(self, *exc) -> None:
        try:
            self.stop()
        finally:
            self.s.close()

    @property
    def link(self):
        return self.s.link

    def start(self, name: str, arg=None) -> P.Stream:
        """Send ``live`` / ``capture N``; the ``stream`` line (BenchError for an ``error`` answer)."""
        self.s._settle()
        self.link.send(name, arg)
        self.streaming = True
        deadline = time.monotonic() + self.timeout
        while True:
            msg = self.next(deadline=deadline)
            if msg is None:
                raise BenchError(f"{self.s.port}: no stream line within {self.timeout:g}s after '{name}'")
            if isinstance(msg, P.Error):
                self.streaming = False
                self.s._await_ready(idle=min(self.timeout, READY_GRACE))
                raise BenchError(f"{self.s.port}: the device refused '{name}': {msg.code} ({msg.detail})")
            if isinstance(msg, P.Stream):
                return msg

    def next(self, idle: float | None = None, deadline: float | None = None):
        """The next intact message (None after ``idle`` s of silence); Disconnected -> BenchError."""
        try:
            return self.link.next_message(idle=self.timeout if idle is None else idle, deadline=deadline)
        except Disconnected as e:
            self.streaming = False
            raise BenchError(f"{e} during the stream") from None

    def stop(self, on_message=None) -> None:
        """``stop``, then read up to ``ready`` (bounded by the timeout); messages on the way go to
        ``on_message``."""
        if not self.streaming or self.link is None:
            return
        self.streaming = False
        try:
            self.link.send("stop")
            deadline = time.monotonic() + self.timeout
            while True:
                msg = self.link.next_message(idle=self.timeout, deadline=deadline)
                if msg is None or isinstance(msg, P.Ready):
                    return
                if on_message is not None:
                    on_message(msg)
        except Disconnected:
            return


# --------------------------------------------------------------------------- monitor

@dataclass
class MonitorState:
    stream: P.Stream
    class_names: list[str] | None = None
    current: int = -1
    n: int = 0
    events: list = field(default_factory=list)
    beats: int = 0
    dropped: int = 0
    us_last: int = 0
    us_max: int = 0
    budget: int = 0
    link_dropped: int = 0

    def name(self, k: int) -> str:
        if k < 0:
            return "-"
        if self.class_names and k < len(self.class_names):
            return self.class_names[k]
        return f"class {k}"

    def add(self, msg) -> None:
        if isinstance(msg, P.Event):
            self.events.append(msg)
            self.current, self.n = msg.pred, max(self.n, msg.n)
            self.us_last = msg.micros
            self.us_max = max(self.us_max, msg.micros)
        elif isinstance(msg, P.Beat):
            self.beats += 1
            self.current, self.n, self.dropped = msg.pred, max(self.n, msg.n), msg.dropped
            self.us_last, self.us_max, self.budget = msg.us_last, max(self.us_max, msg.us_max), msg.budget

    def record(self, msg) -> dict:
        """The JSON line of an event, beat or stream (``t_s``: stream time n / rate)."""
        d = P.to_dict(msg)
        if "n" in d:
            d["t_s"] = round(d["n"] / self.stream.rate_hz, 6)
        if "pred" in d:
            d["class"] = self.name(d["pred"])
        d["host_time"] = datetime.now(timezone.utc).isoformat(timespec="milliseconds")
        return d

    def table(self, port: str, clock: str):
        from rich.table import Table

        unit = "instr" if clock == "icount" else "us"
        t = Table(title=f"{port}: live ({self.stream.rate_hz} Hz, window {self.stream.window}, "
                        f"hop {self.stream.hop}, source {self.stream.source})", show_header=False)
        t.add_column("what", style="bold")
        t.add_column("value")
        cur = self.name(self.current)
        t.add_row("class", f"[green]{cur}[/]" if self.current == 0 else f"[red]{cur}[/]" if self.current > 0 else cur)
        t.add_row("samples", f"{self.n} ({self.n / self.stream.rate_hz:.1f} s of stream)")
        t.add_row("dropped", f"[red]{self.dropped}[/]" if self.dropped else "0")
        budget = self.budget or self.stream.budget
        share = f" ({100 * self.us_max / budget:.0f} % of the hop)" if budget else ""
        t.add_row("latency", f"last {self.us_last} {unit}, max {self.us_max} {unit}{share}; budget {budget} {unit}")
        for e in self.events[-5:][::-1]:
            t.add_row(f"event @{e.n / self.stream.rate_hz:.2f} s",
                      f"{self.name(e.pred)} (score {e.score:.3f}, thr {e.threshold:.3f})")
        if self.link_dropped:
            t.add_row("link", f"{self.link_dropped} damaged line(s) ignored")
        return t


class JsonLines:
    """An append-only JSON-lines file: every record is one ``os.write`` of a complete line, so a
    crash leaves only whole lines (the file holds what was received up to it)."""

    def __init__(self, path):
        self.path = Path(path)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_APPEND, 0o644)
        except OSError as e:
            raise BenchError(f"cannot write {self.path}: {e.strerror}") from None

    def write(self, record: dict) -> None:
        data = (json.dumps(record, separators=(",", ":")) + "\n").encode()
        try:
            n = os.write(self.fd, data)
        except OSError as e:
            raise BenchError(f"cannot write {self.path}: {e.strerror}") from None
        if n != len(data):                       # a full disk mid-line: cut the partial line off
            os.ftruncate(self.fd, os.lseek(self.fd, 0, os.SEEK_END) - n)
            raise BenchError(f"cannot write {self.path}: the disk is full")

    def close(self) -> None:
        os.close(self.fd)


def monitor(port: str, seconds: float | None = None, out=None, baud: int = P.DEFAULT_BAUD, timeout: float = 5.0,
            class_names=None, show=None) -> MonitorState:
    """``live`` on ``port`` for ``seconds`` of host time (None: until Ctrl-C), every event and beat
    to ``out`` (JSON lines) and to ``show(state)``; ``stop`` at the end, on Ctrl-C (re-raised) or on
    an error. BenchError when the device goes silent for ``timeout`` s or the port vanishes."""
    sink = JsonLines(out) if out is not None else None
    try:
        with LiveSession(port, baud, timeout) as ls:
            stream = ls.start("live")
            st = MonitorState(stream, list(class_names) if class_names else None, budget=stream.budget)
            clock = ls.banner.clock
            if sink is not None:
                sink.write(st.record(stream) | {"clock": clock, "board": ls.banner.board, "dev": ls.banner.device_id})
            end = None if seconds is None else time.monotonic() + float(seconds)

            def take(msg) -> None:
                if isinstance(msg, (P.Event, P.Beat)):
                    st.add(msg)
                    if sink is not None:
                        sink.write(st.record(msg))

            if show is not None:
                show(st, clock)
            while end is None or time.monotonic() < end:
                msg = ls.next(deadline=end)
                if msg is None:
                    if end is not None and time.monotonic() >= end:
                        break
                    raise BenchError(f"{port}: no line for {timeout:g}s during live (a beat is due every "
                                     "second of samples)")
                take(msg)
                st.link_dropped = ls.link.dropped
                if show is not None:
                    show(st, clock)
            ls.stop(take)
            return st
    finally:
        if sink is not None:
            sink.close()


# --------------------------------------------------------------------------- capture

@dataclass
class Captured:
    stream: P.Stream
    frames: np.ndarray          # (N, C) int16, rows of lost frames are zero and never used
    present: np.ndarray         # (N,) bool
    device_gaps: list           # (index, count) the device reported
    link_gaps: list             # (index, count) of frames no intact line delivered
    capend: P.CaptureEnd | None

    def runs(self) -> list[tuple[int, int]]:
        """[a, b) stretches of consecutive present frames."""
        out, a = [], None
        for i, ok in enumerate(self.present.tolist() + [False]):
            if ok and a is None:
                a = i
            elif not ok and a is not None:
                out.append((a, i))
                a = None
        return out


def _missing_runs(mask: np.ndarray) -> list[tuple[int, int]]:
    out, a = [], None
    for i, m in enumerate(mask.tolist() + [False]):
        if m and a is None:
            a = i
        elif not m and a is not None:
            out.append((a, i - a))
            a = None
    return out


def capture_frames(ls: LiveSession, seconds: float, check_stream=None, progress=None) -> Captured:
    """``capture 0`` until frames 0..N-1 (N = round(seconds x rate)) are accounted for, then
    ``stop``. ``check_stream(stream)`` may raise to refuse the stream before anything is kept."""
    stream = ls.start("capture", 0)
    if check_stream is not None:
        check_stream(stream)
    c = int(stream.channels)
    n = int(round(float(seconds) * stream.rate_hz))
    if n < 1 or c < 1:
        raise BenchError(f"{seconds:g} s at {stream.rate_hz} Hz of {c} channels is no frame to capture")
    frames = np.zeros((n, c), np.int16)
    seen = np.zeros(n, np.int8)          # 1 frame, 2 device gap
    gaps: list = []
    capend = None
    reached = 0                          # the device's counter: every frame before it is accounted for

    def take(msg) -> None:
        nonlocal capend, reached
        if isinstance(msg, P.Frames):
            if len(msg.data) != msg.count * c:
                raise BenchError(f"a frames line holds {len(msg.data)} values for {msg.count} frames of {c} channels")
            a, b = msg.index, min(msg.index + msg.count, n)
            if a < b:
                if seen[a:b].any():
                    raise BenchError(f"frames {a}..{b - 1} arrived twice: the device's counter is not continuous")
                frames[a:b] = np.asarray(msg.data, np.int16).reshape(msg.count, c)[:b - a]
                seen[a:b] = 1
            reached = max(reached, msg.index + msg.count)
        elif isinstance(msg, P.Gap):
            a, b = msg.index, min(msg.index + msg.count, n)
            gaps.append((msg.index, msg.count))
            if a < b:
                if seen[a:b].any():
                    raise BenchError(f"a gap over frames {a}..{b - 1} that already arrived")
                seen[a:b] = 2
            reached = max(reached, msg.index + msg.count)
        elif isinstance(msg, P.CaptureEnd):
            capend = msg

    while reached < n:
        msg = ls.next()
        if msg is None:
            raise BenchError(f"{ls.s.port}: no line for {ls.timeout:g}s during the capture "
                             f"({min(reached, n)} of {n} frames)")
        take(msg)
        if isinstance(msg, P.CaptureEnd):
            ls.streaming = False
            break
        if progress is not None:
            progress(min(reached, n), n)
    # frames no intact line delivered (a damaged line is dropped by SerialLink) stay unseen: gaps
    ls.stop(take)
    device = sorted((a, min(cnt, n - a)) for a, cnt in gaps if a < n)
    link = _missing_runs(seen == 0)
    return Captured(stream, frames, seen == 1, device, link, capend)


def recording_stem(label: str, when: datetime | None = None) -> str:
    when = when or datetime.now(timezone.utc)
    return f"{label}-{when.strftime('%Y%m%dT%H%M%SZ')}"


def _capture_layout(stream: P.Stream, facts, channels: list[str] | None, spec_channels) -> tuple:
    """(channel names, full scale per channel, unit per channel) of a stream."""
    c = int(stream.channels)
    if facts is not None:
        if len(facts.channels) != c:
            raise BenchError(f"the board streams {c} channels, device {facts.channels!r} of --run has "
                             f"{len(facts.channels)}")
        if abs(stream.scale - facts.full_scale[0] / 32767) > 1.5e-6 + 1e-3 * abs(stream.scale):
            raise BenchError(f"the board's scale {stream.scale:g} per count differs from --run's "
                             f"{facts.full_scale[0] / 32767:g}: does the board run that device?")
        names = list(facts.channels)
        if channels is not None and channels != names:
            raise BenchError(f"--channels {','.join(channels)} differ from --run's {','.join(names)}")
        return names, list(facts.full_scale), list(facts.units)
    if stream.unit == MIXED_UNIT:
        raise BenchError("the board's channels differ in scale or unit (unit=mixed): give --run RUN --device K "
                         "so that each channel is written in its own physical unit")
    names = channels or (list(spec_channels) if spec_channels and len(spec_channels) == c else None) \
        or [f"ch{i}" for i in range(c)]
    if len(names) != c:
        raise BenchError(f"--channels names {len(names)} channels, the board streams {c}")
    return names, [stream.scale * 32767] * c, [stream.unit] * c


def run_capture(port: str, label: str, seconds: float, out, *, run=None, device=None, channels=None,
                rate=None, gaps: str = "split", baud: int = P.DEFAULT_BAUD, timeout: float = 5.0,
                when: datetime | None = None) -> tuple[list[Path], list[str]]:
    """``fedtiny capture``: (files written, report lines). Checks what it can before talking to the
    board (label, fleet.toml), the stream against --rate, --run and fleet.toml before keeping a
    frame, and writes through ``fleetdir.add_recordings``. BenchError / DataError on bad input."""
    from fedtiny.trainer.data.fleetdir import _check_label, add_recordings, capture_spec, read_spec

    out = Path(out)
    _check_label(label)
    names = [c.strip() for c in channels.split(",")] if isinstance(channels, str) else channels
    if names is not None and (not all(names) or len(set(names)) != len(names)):
        raise BenchError(f"--channels {channels!r}: give distinct, non-empty names")
    root = out.parent
    spec = read_spec(root) if root.is_dir() else None
    if spec is not None and spec.classes is not None and label not in spec.classes:
        raise BenchError(f"label {label!r} is not in {root / 'fleet.toml'}'s classes ({', '.join(spec.classes)})")
    facts = None
    if run is not None:
        from fedtiny.firmware.simsensor import SensorError, run_facts

        if device is None:
            raise BenchError("--run needs --device (the device the board runs)")
        try:
            facts = run_facts(run, device)
        except SensorError as e:
            raise BenchError(str(e)) from None
    classes = list(facts.class_names) if facts is not None else None
    if classes is not None and label not in classes:
        raise BenchError(f"label {label!r} is not a class of device {device} of --run ({', '.join(classes)})")
    layout = {}

    def check(stream: P.Stream) -> None:
        if rate is not None and abs(float(rate) - stream.rate_hz) > 1e-9 * float(rate):
            raise BenchError(f"the board samples at {stream.rate_hz} Hz, not the {float(rate):g} Hz asked "
                             "(--rate); its rate is fixed by its firmware")
        if facts is not None and abs(facts.rate_hz - stream.rate_hz) > 1e-9 * facts.rate_hz:
            raise BenchError(f"the board samples at {stream.rate_hz} Hz, device {device} of --run at "
                             f"{facts.rate_hz:g} Hz")
        ch, fs, units = _capture_layout(stream, facts, names, spec.channels if spec else None)
        capture_spec(root, stream.rate_hz, ch, dict(zip(ch, units)), label, classes)
        layout.update(channels=ch, full_scale=fs, units=units)

    with LiveSession(port, baud, timeout) as ls:
        got = capture_frames(ls, seconds, check)
    rate_hz = float(got.stream.rate_hz)
    report = [f"{port}: {int(got.present.sum())} of {len(got.present)} frames at {got.stream.rate_hz} Hz"
              f" ({len(got.present) / rate_hz:g} s), source {got.stream.source}"]
    holes = [(a, c, "lost by the device (its buffer overran)") for a, c in got.device_gaps] + \
            [(a, c, "lost on the link (damaged line)") for a, c in got.link_gaps]
    for a, c, why in sorted(holes):
        report.append(f"gap: frames {a}..{a + c - 1} ({a / rate_hz:.3f}-{(a + c) / rate_hz:.3f} s) {why}")
    if holes and gaps == "refuse":
        raise BenchError(f"{len(holes)} gap(s) in the capture, {sum(c for _, c, _ in holes)} frames lost "
                         "(--gaps refuse): nothing written")
    scale = np.asarray(layout["full_scale"], np.float64) / 32767
    parts = [got.frames[a:b].astype(np.float64) * scale for a, b in got.runs()]
    if not parts:
        raise BenchError("every frame was lost: nothing to write")
    if len(parts) > 1:
        report.append(f"the capture is split at its gaps into {len(parts)} recordings (no frame is invented)")
    units = {c: u for c, u in zip(layout["channels"], layout["units"]) if u and u != "_"}
    stem = base = recording_stem(label, when)
    k = 1
    while any(out.glob(f"{stem}.csv")) or any(out.glob(f"{stem}-p*.csv")):
        k += 1                                        # two captures within one second
        stem = f"{base}-{k}"
    try:
        written = add_recordings(out, label, parts, layout["channels"], rate_hz, units,
                                 dict(zip(layout["channels"], layout["full_scale"])), stem, classes)
    except OSError as e:                          # full disk, read-only folder: nothing is left half-written
        raise BenchError(f"cannot write the recording into {out}: {e.strerror or e} (nothing written)") from None
    report.append(f"labels: {len(written)} line(s) '{written[0]},{label}'{' ...' if len(written) > 1 else ''} "
                  f"added to {out / 'labels.csv'}")
    return [out / n for n in written], report
