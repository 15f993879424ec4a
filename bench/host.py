"""Benchmark a board (or the emulator) over protocol v3: ``bench_device`` and friends.

Flow per board: open the port, handshake (``info`` -> banner, version check), check the model
hash against the run, ``run`` (one sample line per embedded test window, then the summary),
optionally stream more windows with ``infer``, then compare the device's decisions with the
run's INT8 decisions (tflite-micro on the host). For every decision that differs, the board's raw
scores are fetched with ``infer`` and compared with the host's (``scores``): within
``tolerance_lsb`` the difference is ``borderline`` (a window at the threshold; listed, the bench
passes), beyond it a ``mismatch`` (the bench fails).

Robustness rules (see firmware/PROTOCOL.md, "Host behaviour"):
* A value is used only from a line whose CRC and syntax are intact (``SerialLink``).
* Sample lines are idempotent (keyed by index). Indices that no intact line delivered are
  fetched again by re-running ``run`` (up to ``passes`` passes); if some are still missing and
  the run's test split is at hand, each is re-requested with ``infer`` on the very vector the
  firmware embeds; otherwise the bench fails with a clear error. Accuracy is computed on the
  host from the per-sample lines, never taken from the device's summary (which is cross-checked).
* Every wait has an inactivity timeout; every retry loop is bounded; after a timeout the host
  resynchronises with ``info`` (everything before the new banner is discarded).
* A lost port (USB reset, Nano 33 BLE re-enumeration) is waited for and reopened, a bounded
  number of times, then the handshake (and hash check) is repeated.
"""
from __future__ import annotations

import csv
import io
import re
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

import numpy as np

from fedtiny.trainer.rundir import dumps_strict
from fedtiny.firmware import protocol as P

from .link import Disconnected, SerialLink
from .ports import _usb_identity, open_port, wait_for_port
from .rundata import BenchError, RunDevice, load_run_device
from .scores import DEFAULT_TOLERANCE_LSB, classify, host_scores, lsb_gap

Progress = Callable[[str, int, int], None]
READY_GRACE = 0.5   # seconds to wait for the 'ready' that follows a final data line at once


@dataclass
class BenchResult:
    port: str
    board: str
    device_id: int
    protocol_version: int
    clock: str                      # "device" (board's own timer) or "host" (emulator)
    model_hash: str
    arena_bytes: int
    threshold: float
    threshold_origin: str           # what the board's banner says: local / fleet / default
    n_classes: int
    n_test: int                     # windows the firmware embeds
    run_dir: str | None
    expected_model_hash: str | None
    hash_ok: bool | None
    # host-side evaluation of the intact per-sample lines
    n: int = 0
    correct: int = 0
    accuracy: float = 0.0
    tp: int = 0
    fp: int = 0
    tn: int = 0
    fn: int = 0
    latency_us: dict = field(default_factory=dict)   # min/mean/p50/p95/max + clock
    expected_accuracy: float | None = None           # the run's INT8 accuracy on the same windows
    # decisions that differ from the run's, split by the board's raw scores (bench.scores):
    # [{index, device_pred, host_pred, label, score_lsb_diff, device_scores, host_scores}]
    decision_mismatches: list = field(default_factory=list)  # beyond tolerance_lsb (or no scores)
    borderline: list = field(default_factory=list)           # within tolerance_lsb
    tolerance_lsb: int = DEFAULT_TOLERANCE_LSB
    label_mismatches: list = field(default_factory=list)     # [{index, device_label, run_label}]
    device_summary: dict | None = None
    expected_threshold_origin: str | None = None   # the run's device.json (None without a run)
    threshold_origin_ok: bool | None = None        # board and device.json agree (None without a run)
    summary_agrees: bool | None = None
    samples: list = field(default_factory=list)      # [{index, source, pred, label, micros, ...}]
    stream: dict | None = None
    link: dict = field(default_factory=dict)         # lines, dropped, passes, refetched, reconnects
    warnings: list = field(default_factory=list)
    elapsed_s: float = 0.0
    finished_at: str = ""

    @property
    def ok(self) -> bool:
        """True when every decision the device made matches the host's INT8 decision, or differs
        only where its scores are within ``tolerance_lsb`` of the host's (borderline)."""
        stream_bad = bool(self.stream and self.stream.get("decision_mismatches"))
        return not self.decision_mismatches and not self.label_mismatches and not stream_bad

    @property
    def n_borderline(self) -> int:
        return len(self.borderline) + (len(self.stream.get("borderline", [])) if self.stream else 0)

    @property
    def n_mismatch(self) -> int:
        return len(self.decision_mismatches) + (len(self.stream["decision_mismatches"]) if self.stream else 0)

    @property
    def status(self) -> str:
        """'ok', 'borderline' (only borderline differences) or 'mismatch'."""
        if not self.ok:
            return "mismatch"
        return "borderline" if self.n_borderline else "ok"

    def to_dict(self) -> dict:
        d = asdict(self)
        d["ok"] = self.ok
        d["status"] = self.status
        return d


# --------------------------------------------------------------------------- one port session

class _Session:
    def __init__(self, port: str, baud: int, timeout: float, retries: int, reconnect_wait: float,
                 max_reconnects: int = 2):
        self.port = port
        self.baud = baud
        self.timeout = float(timeout)
        self.retries = max(1, int(retries))
        self.reconnect_wait = float(reconnect_wait)
        self.max_reconnects = max_reconnects
        self.reconnects = 0
        self.identity = _usb_identity(port)
        self.link: SerialLink | None = None
        self.banner: P.Banner | None = None
        self.lines = self.dropped = 0
        self.warnings: list[str] = []
        # True when a command's trailing 'ready' did not arrive within READY_GRACE: it may still be
        # on its way, and must not be taken for the answer to the next command
        self.ready_owed = False

    # ------------------------------------------------------------ connection
    def open(self) -> None:
        self.link = SerialLink(open_port(self.port, self.baud), self.port)

    def close(self) -> None:
        if self.link is not None:
            self.lines += self.link.lines
            self.dropped += self.link.dropped
            try:
                self.link.ser.close()
            except Exception:
                pass
            self.link = None

    def stats(self) -> tuple[int, int]:
        extra = (self.link.lines, self.link.dropped) if self.link else (0, 0)
        return self.lines + extra[0], self.dropped + extra[1]

    def reconnect(self, why: Disconnected, counted: bool = True) -> None:
        self.close()
        if counted:
            if self.reconnects >= self.max_reconnects:
                raise BenchError(f"{why}; gave up after {self.reconnects} reconnects")
            self.reconnects += 1
        deadline = time.monotonic() + self.reconnect_wait
        time.sleep(0.3)   # a board that resets drops off USB a moment after the command
        while True:
            path = wait_for_port(self.port, self.identity, max(0.0, deadline - time.monotonic()))
            if path is None:
                raise BenchError(f"{why}; the port did not come back within {self.reconnect_wait:g}s")
            try:
                self.port = path
                self.open()
                break
            except BenchError:
                if time.monotonic() >= deadline:
                    raise BenchError(f"{why}; the port did not come back within "
                                     f"{self.reconnect_wait:g}s") from None
                time.sleep(0.2)
        old = self.banner
        new = self.handshake()
        if old is not None and new.model_hash != old.model_hash:
            raise BenchError(f"{self.port}: after reconnecting, the device reports another model "
                             f"({new.model_hash[:12]} instead of {old.model_hash[:12]})")
        if counted:
            self.warnings.append(f"reconnected to {self.port} after: {why}")

    def reset_device(self) -> P.Banner:
        """``reset``, then wait for the board to boot: a UART bridge (ESP32) keeps the port and the
        boot banner arrives on it; a native-USB board (Nano 33 BLE) drops off USB and
        re-enumerates, so the port is waited for, reopened and handshaken again."""
        try:
            # Nothing may be in flight when 'reset' goes out: a boot banner taken as the answer
            # to the handshake's 'info' leaves that answer (banner, ready) still coming, and it
            # would be read as the board's boot after the reset, so the next command would reach
            # the board while it resets (seen on QEMU, where a reset drops that byte).
            self._settle()
            self._drain(idle=min(self.timeout, READY_GRACE))
            self.link.send("reset")
            self._await_ready(idle=min(self.timeout, READY_GRACE))
            deadline = time.monotonic() + self.timeout + self.reconnect_wait
            while True:
                msg = self.link.next_message(idle=self.timeout, deadline=deadline)
                if msg is None:
                    break
                if isinstance(msg, P.Banner):
                    self._await_ready(idle=min(self.timeout, READY_GRACE))
                    self.banner = msg
                    return msg
            return self.handshake()
        except Disconnected as e:
            self.reconnect(e, counted=False)
            return self.banner

    # ------------------------------------------------------------ handshake / resync
    def _drain(self, idle: float) -> None:
        """Read and drop messages until ``idle`` seconds of silence (at most ``timeout`` in all)."""
        deadline = time.monotonic() + self.timeout
        while self.link.next_message(idle=idle, deadline=deadline) is not None:
            pass

    def _await_ready(self, idle: float) -> bool:
        """Read up to the next 'ready' (True), or until ``idle`` seconds of silence or 4 x ``idle``
        in all (False; the 'ready' is then owed, see ``_settle``)."""
        deadline = time.monotonic() + 4 * idle
        while True:
            msg = self.link.next_message(idle=idle, deadline=deadline)
            if msg is None:
                self.ready_owed = True
                return False
            if isinstance(msg, P.Ready):
                self.ready_owed = False
                return True

    def _settle(self) -> None:
        """Before a command: wait out a 'ready' still owed by the previous one (bounded by the
        timeout), then drop whatever else is buffered, so that no late line of an earlier command
        is read as this command's answer."""
        if self.ready_owed:
            self._await_ready(idle=self.timeout)
            self.ready_owed = False
        self.link.discard_input()

    def handshake(self) -> P.Banner:
        """``info`` until an intact banner arrives (bounded); checks the protocol version."""
        link = self.link
        self._settle()
        link.expect_fedtiny()       # another program / wrong baud: say so in seconds, not minutes
        silent = answered = 0
        while silent < self.retries and answered < 4 * self.retries:
            lines_before = link.lines
            link.send("info")
            deadline = time.monotonic() + self.timeout
            while True:
                msg = link.next_message(idle=self.timeout, deadline=deadline)
                if msg is None or isinstance(msg, P.Ready):
                    # silent, or our banner was lost on the line: ask again (a device that
                    # answers gets more tries than a silent one)
                    if link.lines > lines_before:
                        answered += 1
                    else:
                        silent += 1
                    break
                if isinstance(msg, P.ForeignBanner):
                    raise BenchError(
                        f"{self.port}: device speaks protocol v{msg.version}, this host speaks "
                        f"v{P.PROTOCOL_VERSION}; flash firmware built by this fedtiny version")
                if isinstance(msg, P.Banner):
                    self._await_ready(idle=min(self.timeout, READY_GRACE))
                    self.banner = msg
                    return msg
        if silent < self.retries:
            raise BenchError(f"{self.port}: no intact banner in {answered + silent} 'info' requests: "
                             f"{link.dropped} of {link.lines} lines were corrupted; the serial link "
                             f"is too noisy")
        total = self.retries * self.timeout
        if link.frames:
            raise BenchError(f"{self.port}: device answers protocol v{P.PROTOCOL_VERSION} lines "
                             f"but never an intact banner after {self.retries} 'info' requests")
        if link.dropped:
            raise BenchError(f"{self.port}: no fedtiny protocol v{P.PROTOCOL_VERSION} banner within "
                             f"{total:g}s, only other text (not fedtiny firmware, or wrong baud "
                             f"rate?){link.noise_hint()}")
        raise BenchError(f"{self.port}: device is silent: no answer to {self.retries} 'info' "
                         f"requests within {total:g}s (firmware not running, wrong port or baud?)")

    # ------------------------------------------------------------ run
    def run_pass(self, n_test: int, samples: dict, conflicts: list, progress: Progress | None):
        """One ``run``; adds intact samples to ``samples``; returns (summary|None, ended_by)."""
        link = self.link
        self._settle()
        link.send("run")
        summary = None
        seen = False
        deadline = time.monotonic() + max(60.0, 20 * self.timeout) + 2.0 * n_test
        while True:
            msg = link.next_message(idle=self.timeout, deadline=deadline)
            if msg is None:
                return summary, "timeout"
            if isinstance(msg, P.Sample):
                seen = True
                if not 0 <= msg.index < n_test:
                    self.warnings.append(f"sample index {msg.index} outside 0..{n_test - 1} ignored")
                    continue
                old = samples.get(msg.index)
                if old is None:
                    samples[msg.index] = msg
                    if progress:
                        progress("run", len(samples), n_test)
                elif (old.pred, old.label) != (msg.pred, msg.label):
                    conflicts.append(msg.index)
            elif isinstance(msg, P.Summary):
                seen = True
                summary = msg
                # 'ready' follows at once; if it was lost, do not wait the full timeout
                if self._await_ready(idle=min(self.timeout, READY_GRACE)):
                    return summary, "ready"
                return summary, "summary"
            elif isinstance(msg, P.Ready):
                if seen:
                    return summary, "ready"
            elif isinstance(msg, P.Error):
                raise BenchError(f"{self.port}: device failed to run: {msg.code}: {msg.detail}")
            elif isinstance(msg, (P.Banner, P.ForeignBanner)) and seen:
                self.warnings.append("device restarted during 'run'")
                return summary, "restart"

    # ------------------------------------------------------------ infer
    def infer(self, x: np.ndarray) -> P.InferResult:
        self._settle()
        silent = answered = 0
        while silent < self.retries and answered < 4 * self.retries:
            self.link.send("infer", x)
            deadline = time.monotonic() + max(30.0, 10 * self.timeout)
            while True:
                msg = self.link.next_message(idle=self.timeout, deadline=deadline)
                if msg is None:
                    silent += 1
                    self.handshake()            # resync: discard everything before a new banner
                    break
                if isinstance(msg, P.InferResult):
                    self._await_ready(idle=min(self.timeout, READY_GRACE))
                    return msg
                if isinstance(msg, P.Ready):
                    answered += 1
                    break                       # the answer line was lost: ask again
                if isinstance(msg, P.Error):
                    if msg.code == "bad_crc":   # our command was damaged in transit
                        answered += 1
                        self._await_ready(idle=min(self.timeout, READY_GRACE))
                        break
                    raise BenchError(f"{self.port}: device rejected infer: {msg.code}: {msg.detail}")
        raise BenchError(f"{self.port}: no intact answer to 'infer' after {silent + answered} tries "
                         f"({self.link.dropped} of {self.link.lines} lines corrupted)")

    def with_reconnect(self, fn):
        while True:
            try:
                return fn()
            except Disconnected as e:
                why = e
            while True:                       # the board may drop again while coming back
                try:
                    self.reconnect(why)
                    break
                except Disconnected as again:
                    why = again


# --------------------------------------------------------------------------- bench one board

def _stream_order(n_embedded: int, n_total: int, k: int) -> list[int]:
    """Windows the firmware does not carry first (n_embedded..), then the embedded ones."""
    order = list(range(n_embedded, n_total)) + list(range(0, min(n_embedded, n_total)))
    return order[:k]


def _check_sendable(rd: RunDevice) -> None:
    """Windows go to the device with 'infer'; refuse (clearly) windows larger than its payload."""
    if rd.input_size > P.INFER_MAX_PAYLOAD:
        raise BenchError(f"run {rd.run_dir} device {rd.device}: a window is {rd.input_size} bytes, more "
                         f"than an 'infer' command carries ({P.INFER_MAX_PAYLOAD}); it cannot be sent")


def bench_device(port: str, run_dir: str | Path | None = None, device: int | None = None,
                 stream: int = 0, timeout: float = 5.0, *, baud: int = P.DEFAULT_BAUD,
                 passes: int = 3, retries: int = 3, reconnect_wait: float = 10.0,
                 reset: bool = False, progress: Progress | None = None,
                 tolerance_lsb: int = DEFAULT_TOLERANCE_LSB) -> BenchResult:
    """Benchmark the board on ``port``. With ``run_dir``, the banner's model hash must equal the
    run's ``model_sha256`` (device: ``device`` or else the banner's device id), and decisions are
    compared with the run's INT8 decisions. ``timeout``: seconds of silence before a wait fails.
    ``reset``: restart the board first (and wait for it to come back, re-enumeration included).
    ``tolerance_lsb``: a differing decision whose scores are all within this many LSB of the
    host's is ``borderline``, not a mismatch (module docstring). Raises ``BenchError`` (one line, actionable) on every failure; writes nothing."""
    t0 = time.monotonic()
    rd: RunDevice | None = None
    if run_dir is not None and device is not None:
        rd = load_run_device(run_dir, device)      # bad run input fails before the port opens
    if stream and run_dir is None:
        raise BenchError("--stream needs a run (--run DIR): the windows come from its test split")
    if stream and rd is not None:
        _check_sendable(rd)
    if int(tolerance_lsb) < 0:
        raise BenchError("--tolerance-lsb must be >= 0")
    s = _Session(port, baud, timeout, retries, reconnect_wait)
    s.open()
    try:
        banner = s.with_reconnect(s.handshake)
        if reset:
            old_hash = banner.model_hash
            banner = s.reset_device()
            port = s.port
            if banner.model_hash != old_hash:
                raise BenchError(f"{port}: after reset the device reports another model")
        if progress:
            progress("handshake", 1, 1)
        if run_dir is not None and rd is None:
            rd = load_run_device(run_dir, banner.device_id)
        if rd is not None:
            if banner.model_hash != rd.model_sha256:
                raise BenchError(
                    f"{port}: model hash differs: the device runs {banner.model_hash[:16]}..., "
                    f"run {rd.run_dir} device {rd.device} has {rd.model_sha256[:16]}...; flash the "
                    f"firmware built from this run or pass the matching --run/--device")
            if banner.device_id != rd.device:
                s.warnings.append(f"banner says device {banner.device_id}, run device is {rd.device} "
                                  f"(same model bytes)")
            if banner.n_test > len(rd.y):
                raise BenchError(f"{port}: the device carries {banner.n_test} test windows but the "
                                 f"run's test split has {len(rd.y)}: firmware from another run?")
            if abs(banner.threshold - rd.threshold) > 1e-5:
                s.warnings.append(f"device threshold {banner.threshold:.6f} differs from the run's "
                                  f"{rd.threshold:.6f}")
            if banner.threshold_origin != rd.threshold_origin:
                s.warnings.append(f"device threshold origin {banner.threshold_origin} differs from the "
                                  f"run's {rd.threshold_origin} (firmware built from another device.json?)")
            if banner.n_classes != rd.n_classes:
                s.warnings.append(f"device reports {banner.n_classes} classes, run has {rd.n_classes}")
        n_test = banner.n_test

        # ---- run: embedded windows, fetched until every index arrived intact
        samples: dict[int, P.Sample] = {}
        conflicts: list[int] = []
        summary = None
        n_passes = 0
        while n_passes < max(1, passes) and (n_passes == 0 or len(samples) < n_test):
            n_passes += 1
            got, ended = s.with_reconnect(lambda: s.run_pass(n_test, samples, conflicts, progress))
            summary = got or summary
            if ended == "timeout" and len(samples) < n_test:
                s.with_reconnect(s.handshake)
        source = {i: "run" for i in samples}
        missing = sorted(set(range(n_test)) - set(samples))
        refetched = []
        probed: dict[int, tuple] = {}          # index -> the board's raw scores (from 'infer')
        if missing and rd is not None:
            _check_sendable(rd)
            for i in missing:
                r = s.with_reconnect(lambda i=i: s.infer(rd.x_int8[i]))
                samples[i] = P.Sample(i, r.pred, int(rd.y[i]), r.micros)
                probed[i] = tuple(r.scores)
                source[i] = "infer"
                refetched.append(i)
                if progress:
                    progress("run", len(samples), n_test)
            missing = []
        if missing:
            shown = ",".join(str(i) for i in missing[:10]) + (",..." if len(missing) > 10 else "")
            lines, dropped = s.stats()
            raise BenchError(f"{port}: samples {shown} never arrived intact after {n_passes} 'run' "
                             f"passes ({dropped} of {lines} lines corrupted); give --run so they "
                             f"can be re-requested, or fix the serial link")
        if conflicts:
            s.warnings.append(f"device gave different decisions for the same window in different "
                              f"passes: {sorted(set(conflicts))[:10]}")

        # ---- decisions that differ: the board's raw scores, to tell borderline from mismatch
        if rd is not None and rd.input_size <= P.INFER_MAX_PAYLOAD:
            for i in sorted(samples):
                if samples[i].pred != int(rd.pred_int8[i]) and i not in probed:
                    probed[i] = tuple(s.with_reconnect(lambda i=i: s.infer(rd.x_int8[i])).scores)
                    if progress:
                        progress("scores", len(probed), len(probed))

        # ---- stream: windows sent by the host
        stream_res = None
        if stream:
            _check_sendable(rd)
            order = _stream_order(n_test, len(rd.y), int(stream))
            if len(order) < int(stream):
                s.warnings.append(f"--stream {stream}: the test split has only {len(order)} windows")
            rows = []
            for k, i in enumerate(order):
                r = s.with_reconnect(lambda i=i: s.infer(rd.x_int8[i]))
                rows.append((i, r))
                if progress:
                    progress("stream", k + 1, len(order))
            stream_res = _stream_summary(rd, rows, banner.clock, int(tolerance_lsb))
    finally:
        lines, dropped = s.stats()
        s.close()

    res = _assemble(s.port, banner, rd, samples, source, summary, n_test, probed, int(tolerance_lsb))
    res.stream = stream_res
    res.link = dict(lines=lines, dropped_lines=dropped, passes=n_passes, refetched_by_infer=refetched,
                    reconnects=s.reconnects, timeout_s=timeout)
    res.warnings = s.warnings + res.warnings      # the session's, then _assemble's own
    res.elapsed_s = round(time.monotonic() - t0, 3)
    res.finished_at = datetime.now(timezone.utc).isoformat(timespec="seconds")
    return res


def _latency(micros, clock: str) -> dict:
    mn, mean, p50, p95, mx = P.latency_summary(micros)
    return dict(min=mn, mean=mean, p50=p50, p95=p95, max=mx, clock=clock)


def _difference(rd: RunDevice, i: int, device_pred: int, label: int, device_scores,
                host: np.ndarray | None) -> dict:
    """One differing decision with its scores and their largest gap (None: no scores)."""
    gap = lsb_gap(device_scores, host) if device_scores is not None and host is not None else None
    return dict(index=i, device_pred=device_pred, host_pred=int(rd.pred_int8[i]), label=label,
                score_lsb_diff=gap,
                device_scores=None if device_scores is None else [int(v) for v in device_scores],
                host_scores=None if host is None else [int(v) for v in host])


def _assemble(port, banner: P.Banner, rd: RunDevice | None, samples: dict, source: dict,
              summary: P.Summary | None, n_test: int, probed: dict | None = None,
              tolerance_lsb: int = DEFAULT_TOLERANCE_LSB) -> BenchResult:
    idx = sorted(samples)
    preds = [samples[i].pred for i in idx]
    labels = [samples[i].label for i in idx]
    c = P.confusion(preds, labels)
    res = BenchResult(
        port=port, board=banner.board, device_id=banner.device_id,
        protocol_version=banner.version, clock=banner.clock, model_hash=banner.model_hash,
        arena_bytes=banner.arena_bytes, threshold=banner.threshold,
        threshold_origin=banner.threshold_origin, n_classes=banner.n_classes,
        n_test=n_test, run_dir=str(rd.run_dir) if rd else None,
        expected_model_hash=rd.model_sha256 if rd else None,
        hash_ok=(banner.model_hash == rd.model_sha256) if rd else None,
        n=c["n"], correct=c["correct"], accuracy=c["correct"] / c["n"] if c["n"] else 0.0,
        tp=c["tp"], fp=c["fp"], tn=c["tn"], fn=c["fn"],
        latency_us=_latency([samples[i].micros for i in idx], banner.clock),
        tolerance_lsb=tolerance_lsb,
        expected_threshold_origin=rd.threshold_origin if rd else None,
        threshold_origin_ok=(banner.threshold_origin == rd.threshold_origin) if rd else None,
    )
    probed = probed or {}
    differ = [i for i in idx if rd is not None and samples[i].pred != int(rd.pred_int8[i])]
    host = dict(zip(differ, host_scores(rd, differ))) if differ else {}
    for i in idx:
        smp = samples[i]
        row = dict(index=i, source=source[i], pred=smp.pred, label=smp.label, micros=smp.micros,
                   clock=banner.clock, host_pred=None, match=None)
        if rd is not None:
            hp = int(rd.pred_int8[i])
            row["host_pred"] = hp
            row["match"] = smp.pred == hp
            if smp.pred != hp:
                d = _difference(rd, i, smp.pred, smp.label, probed.get(i), host[i])
                row["score_lsb_diff"] = d["score_lsb_diff"]
                if classify(d["score_lsb_diff"], tolerance_lsb) == "borderline":
                    res.borderline.append(d)
                else:
                    res.decision_mismatches.append(d)
            if smp.label != int(rd.y[i]):
                res.label_mismatches.append(dict(index=i, device_label=smp.label,
                                                 run_label=int(rd.y[i])))
        res.samples.append(row)
    if rd is not None and n_test:
        res.expected_accuracy = float(np.mean(rd.pred_int8[:n_test] == rd.y[:n_test]))
    if summary is not None:
        res.device_summary = P.to_dict(summary)
        res.device_summary.pop("type", None)
        res.device_summary["clock"] = banner.clock
        run_idx = [i for i in idx if source[i] == "run"]
        if len(run_idx) == len(idx):
            res.summary_agrees = all(getattr(summary, k) == c[k] for k in c)
            if not res.summary_agrees:
                res.warnings.append("the device's summary counts differ from its sample lines")
    return res


def _stream_summary(rd: RunDevice, rows, clock: str, tolerance_lsb: int = DEFAULT_TOLERANCE_LSB) -> dict:
    idx = [i for i, _ in rows]
    preds = [r.pred for _, r in rows]
    labels = [int(rd.y[i]) for i in idx]
    c = P.confusion(preds, labels)
    expected_scores = host_scores(rd, idx)
    max_lsb = 0
    out_rows, mism, border = [], [], []
    for k, (i, r) in enumerate(rows):
        hp = int(rd.pred_int8[i])
        diff = lsb_gap(r.scores, expected_scores[k])
        if diff is None:
            mism.append(dict(index=i, device_pred=r.pred, host_pred=hp, label=labels[k],
                             problem=f"{len(r.scores)} scores, expected {expected_scores.shape[1]}"))
        else:
            max_lsb = max(max_lsb, diff)
        if r.pred != hp and diff is not None:
            d = _difference(rd, i, r.pred, labels[k], r.scores, expected_scores[k])
            (border if classify(diff, tolerance_lsb) == "borderline" else mism).append(d)
        out_rows.append(dict(index=i, source="stream", pred=r.pred, label=labels[k], micros=r.micros,
                             clock=clock, host_pred=hp, match=r.pred == hp,
                             scores=list(r.scores), max_lsb_diff=diff, score_lsb_diff=diff))
    return dict(n=c["n"], correct=c["correct"], accuracy=c["correct"] / c["n"] if c["n"] else 0.0,
                expected_accuracy=float(np.mean(rd.pred_int8[idx] == rd.y[idx])) if idx else None,
                tp=c["tp"], fp=c["fp"], tn=c["tn"], fn=c["fn"],
                latency_us=_latency([r.micros for _, r in rows], clock),
                max_score_lsb_diff=max_lsb, decision_mismatches=mism, borderline=border,
                samples=out_rows)


# --------------------------------------------------------------------------- several boards

def bench_ports(ports: list[str], run_dir=None, device=None, stream: int = 0, timeout: float = 5.0,
                **kw) -> list[BenchResult | BenchError]:
    """Bench several boards in parallel (one thread per port); each entry is a result or the
    BenchError of that port."""
    def one(p):
        try:
            return bench_device(p, run_dir, device, stream, timeout, **kw)
        except BenchError as e:
            return e
        except Exception as e:  # noqa: BLE001 - one board's failure must not lose the others' results
            return BenchError(f"{p}: {type(e).__name__}: {e}")
    with ThreadPoolExecutor(max_workers=max(1, len(ports))) as ex:
        return list(ex.map(one, ports))


# --------------------------------------------------------------------------- results files

CSV_COLUMNS = ["index", "source", "pred", "label", "host_pred", "match", "score_lsb_diff", "micros", "clock"]
SUMMARY_COLUMNS = ["port", "status", "board", "device_id", "clock", "n", "accuracy",
                   "expected_accuracy", "threshold", "threshold_origin", "threshold_origin_ok",
                   "decision_mismatches", "borderline", "tolerance_lsb", "tp", "fp", "tn", "fn",
                   "lat_min_us", "lat_mean_us", "lat_p50_us", "lat_p95_us", "lat_max_us",
                   "stream_n", "stream_accuracy", "dropped_lines", "error"]


def _port_slug(port: str) -> str:
    p = port[5:] if port.startswith("/dev/") else port
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", p).strip("-") or "port"


def result_stem(res: BenchResult) -> str:
    return f"dev{res.device_id:02d}_{_port_slug(res.port)}"


def _csv_text(rows, columns) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: ("" if r.get(k) is None else r.get(k)) for k in columns})
    return buf.getvalue()


def summary_row(item: BenchResult | BenchError, port: str | None = None) -> dict:
    if isinstance(item, BenchError):
        return dict(port=port, status="error", error=str(item))
    r = item
    lat = r.latency_us
    return dict(port=r.port, status=r.status, board=r.board,
                device_id=r.device_id, clock=r.clock, n=r.n, accuracy=round(r.accuracy, 6),
                expected_accuracy=None if r.expected_accuracy is None else round(r.expected_accuracy, 6),
                threshold=r.threshold, threshold_origin=r.threshold_origin,
                threshold_origin_ok=r.threshold_origin_ok,
                decision_mismatches=r.n_mismatch, borderline=r.n_borderline,
                tolerance_lsb=r.tolerance_lsb, tp=r.tp, fp=r.fp, tn=r.tn, fn=r.fn,
                lat_min_us=lat["min"], lat_mean_us=lat["mean"], lat_p50_us=lat["p50"],
                lat_p95_us=lat["p95"], lat_max_us=lat["max"],
                stream_n=r.stream["n"] if r.stream else 0,
                stream_accuracy=round(r.stream["accuracy"], 6) if r.stream else None,
                dropped_lines=r.link.get("dropped_lines"), error=None)


def write_results(items: list, out_dir: str | Path, ports: list[str] | None = None) -> list[Path]:
    """Write ``<stem>.json`` + ``<stem>.csv`` per benchmarked board (and ``summary.json`` +
    ``summary.csv`` when there are several boards). Every file is rendered in memory first and
    appears whole (temp file + rename) or not at all. Boards that failed get no files of their
    own; they appear in the summary with their error."""
    from fedtiny.trainer.rundir import atomic_write_bytes

    out_dir = Path(out_dir)
    ports = ports or [getattr(it, "port", None) for it in items]
    files: list[tuple[Path, bytes]] = []
    for it in items:
        if isinstance(it, BenchResult):
            stem = result_stem(it)
            rows = list(it.samples) + (list(it.stream["samples"]) if it.stream else [])
            files.append((out_dir / f"{stem}.json", (dumps_strict(it.to_dict(), indent=2) + "\n").encode()))
            files.append((out_dir / f"{stem}.csv", _csv_text(rows, CSV_COLUMNS).encode()))
    if len(items) > 1:
        srows = [summary_row(it, p) for it, p in zip(items, ports)]
        files.append((out_dir / "summary.json", (dumps_strict(srows, indent=2) + "\n").encode()))
        files.append((out_dir / "summary.csv", _csv_text(srows, SUMMARY_COLUMNS).encode()))
    for path, data in files:
        atomic_write_bytes(path, data)
    return [p for p, _ in files]


# --------------------------------------------------------------------------- emulator + bench

def bench_emulated(run_dir: str | Path, device: int, out_dir: str | Path | None = None,
                   stream: int = 0, timeout: float = 5.0, progress: Progress | None = None,
                   **faults) -> tuple[BenchResult, list[Path]]:
    """Serve ``device`` of ``run_dir`` through the emulator on a real pty, bench it with the same
    host code a board gets, and write the results (default: RUN/bench/). For ``fedtiny demo``."""
    from .emulator import Emulator

    with Emulator(run_dir, device, **faults) as emu:
        res = bench_device(emu.port_path, run_dir, device, stream=stream, timeout=timeout,
                           progress=progress)
    paths = write_results([res], Path(out_dir) if out_dir else Path(run_dir) / "bench")
    return res, paths
