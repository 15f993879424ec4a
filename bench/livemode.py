"""The emulator's sensor: live mode and capture (protocol v3) on a simulated sensor.

A ``SensorDevice`` plays a ``simsensor.Track`` (looped: a sensor never ends) as a board's sensor
does: a timer produces frame i at time i / rate, an interrupt puts it in a ring buffer of one
window plus one hop, and the main loop takes frames out of it: in ``live`` it runs the front end
and the model every hop (``fedtiny.live``: the same decisions as the host twin) and sends events
and beats; in ``capture`` it sends the frames. A frame that arrives while the ring is full is lost
(counted, a ``gap`` in capture, a skipped window in live), never papered over.

The sample clock is virtual:

* ``speed=None`` (free-running): the sensor produces the next frame whenever the main loop wants
  one, so nothing is ever lost; the stream is exactly the track, as fast as the host reads;
* ``speed=S``: frame i is produced at t0 + i / (rate S) of the host's monotonic clock (S = 1: real
  time). While the device cannot write (the host stopped reading and the pty is full, or the
  emulator's ``stall``), frames keep coming and the ring overruns, as on a board whose UART blocks.

Which frames were lost is recorded (``lost``: (first, count) runs), so tests can hand the same
holes to the twin.
"""
from __future__ import annotations

import math
import time
from collections import deque

import numpy as np

from fedtiny import live as L
from fedtiny.firmware import protocol as P
from fedtiny.firmware.simsensor import Track


class SensorDevice:
    def __init__(self, track: Track, model: L.LiveModel, hop: int, invoke, speed: float | None = None,
                 clock=time.monotonic, ring: int | None = None):
        f = track.facts
        if len(track) == 0:
            raise ValueError("an empty track")
        self.track, self.model, self.hop = track, model, int(hop)
        self.invoke = invoke                 # int8 input -> (int8 output, micros)
        self.rate = int(round(f.rate_hz))
        self.speed = speed
        self.clock = clock
        # a board's ring holds one window plus one hop; a larger one hides a loaded host's scheduling
        self.ring_cap = int(ring) if ring else model.window + self.hop
        self.lost: list[tuple[int, int]] = []

    # ------------------------------------------------------------ stream facts
    def budget_us(self) -> int:
        """The hop's duration in microseconds of the host clock (at ``speed``)."""
        return int(round(self.hop / self.rate / (self.speed or 1.0) * 1e6))

    def stream_line(self) -> str:
        f = self.track.facts
        same = len(set(f.full_scale)) == 1 and len(set(f.units)) == 1
        # one scale and unit per stream: channels that differ say so (``mixed``), never a wrong scale
        return P.format_message("stream", rate_hz=self.rate, channels=len(f.channels), window=self.model.window,
                                hop=self.hop, budget=self.budget_us(), source="sim", scale=float(f.scale[0]),
                                unit=f.units[0] if same else "mixed")

    # ------------------------------------------------------------ the sensor and its ring
    def _start(self) -> None:
        self.t0 = self.clock()
        self.produced = 0                    # frames the sensor made (the counter n)
        self.ring: deque[int] = deque()      # frame numbers waiting for the main loop
        self.lost = []
        self.dropped = 0
        self._limit: int | None = None

    def _due(self) -> int:
        if self.speed is None:
            return self.produced + (1 if not self.ring else 0)
        return int(math.floor((self.clock() - self.t0) * self.rate * self.speed))

    def _sample(self, limit: int | None) -> None:
        """The interrupt: every frame produced since the last call goes into the ring, or is lost
        when the ring is full; at most up to frame ``limit`` (capture N)."""
        due = self._due()
        if limit is not None:
            due = min(due, limit)
        for i in range(self.produced, due):
            if len(self.ring) < self.ring_cap:
                self.ring.append(i)
            else:
                self.dropped += 1
                if self.lost and self.lost[-1][0] + self.lost[-1][1] == i:
                    self.lost[-1] = (self.lost[-1][0], self.lost[-1][1] + 1)
                else:
                    self.lost.append((i, 1))
        self.produced = max(self.produced, due)

    def tick(self) -> None:
        """The sensor's interrupt while the main loop waits (a blocked write)."""
        self._sample(self._limit)

    def frame(self, i: int) -> np.ndarray:
        return self.track.counts[i % len(self.track)]

    def wait_s(self) -> float:
        """How long until the next frame is due (0 when free-running)."""
        if self.speed is None:
            return 0.0
        return max(0.0, self.t0 + (self.produced + 1) / (self.rate * self.speed) - self.clock())

    def present(self, n: int) -> np.ndarray:
        """The present-mask of frames 0..n-1 (False where lost)."""
        m = np.ones(n, bool)
        for a, c in self.lost:
            m[a:a + c] = False
        return m

    # ------------------------------------------------------------ live
    def live(self, emit, poll_stop) -> None:
        """``live`` until ``poll_stop(timeout)`` returns True: events and beats through ``emit``."""
        self._start()
        emit(self.stream_line())
        w = self.model.window
        hist: deque[int] = deque(maxlen=w)    # frame numbers of the window being filled
        last_pred, us_last, us_max = L.NO_CLASS, 0, 0
        cur = L.NO_CLASS
        beat_next = self.rate
        while True:
            self._sample(None)
            if not self.ring:
                if poll_stop(self.wait_s()):
                    return
                continue
            i = self.ring.popleft()
            hist.append(i)
            n = i + 1
            # beats for every multiple of rate passed by lost frames before this one
            while beat_next < n:
                emit(P.format_message("beat", n=beat_next, pred=cur, dropped=self._lost_before(beat_next),
                                      us_last=us_last, us_max=us_max, budget=self.budget_us()))
                beat_next += self.rate
            if n >= w and (n - w) % self.hop == 0 and len(hist) == w and hist[0] == n - w:
                x = self.model.model_input(np.stack([self.frame(j) for j in hist])[None])[0]
                q, us = self.invoke(x)
                pred, score = self.model.decide(np.asarray(q)[None])
                cur = int(pred[0])
                us_last, us_max = int(us), max(us_max, int(us))
                if cur != last_pred:
                    emit(P.format_message("event", n=n, pred=cur, score=float(score[0]),
                                          threshold=self.model.threshold, micros=int(us)))
                    last_pred = cur
            if n == beat_next:
                emit(P.format_message("beat", n=n, pred=cur, dropped=self._lost_before(n), us_last=us_last,
                                      us_max=us_max, budget=self.budget_us()))
                beat_next += self.rate
            if n % self.hop == 0 and poll_stop(0.0):
                return

    def _lost_before(self, n: int) -> int:
        return sum(max(0, min(a + c, n) - a) for a, c in self.lost)

    # ------------------------------------------------------------ capture
    def capture(self, count: int, emit, poll_stop) -> tuple[int, int]:
        """``capture count`` (0: until stop): frames and gap lines through ``emit``, then capend.
        Returns (sent, dropped)."""
        self._start()
        emit(self.stream_line())
        per_line = P.frames_per_line(len(self.track.facts.channels))
        limit = count if count > 0 else None
        self._limit = limit
        buf: list[int] = []
        sent = 0
        gaps_sent = 0

        def flush():
            nonlocal sent
            if buf:
                data = np.stack([self.frame(j) for j in buf]).reshape(-1)
                emit(P.format_message("frames", index=buf[0], count=len(buf), data=data))
                sent += len(buf)
                buf.clear()

        def gaps_before(i):
            nonlocal gaps_sent
            while gaps_sent < len(self.lost) and self.lost[gaps_sent][0] < i:
                flush()                               # frames before the gap go out first
                a, c = self.lost[gaps_sent]
                emit(P.format_message("gap", index=a, count=c))
                gaps_sent += 1

        while True:
            self._sample(limit)
            if self.ring:
                i = self.ring.popleft()
                gaps_before(i)                        # a lost run before frame i has ended
                if buf and buf[-1] + 1 != i:
                    flush()
                buf.append(i)
                if len(buf) == per_line:
                    flush()
            done = limit is not None and self.produced >= limit and not self.ring
            if done or ((not buf or not self.ring) and poll_stop(0.0 if self.ring else self.wait_s())):
                self._sample(limit)
                while self.ring:                      # what the ring still holds goes out
                    i = self.ring.popleft()
                    gaps_before(i)
                    if buf and (buf[-1] + 1 != i or len(buf) == per_line):
                        flush()
                    buf.append(i)
                flush()
                gaps_before(self.produced + 1)
                emit(P.format_message("capend", sent=sent, dropped=self.dropped))
                return sent, self.dropped
