"""A fedtiny board emulated on a pseudo-terminal: the serial protocol served by the TFLM interpreter.

It runs exactly what the firmware embeds: the run's ``model_int8.tflite`` bytes under the
tflite-micro interpreter (reference kernels) and the test split's ``x_int8`` / ``y`` (optionally
only the first ``n_test`` windows, as a capped firmware), and decides with the trainer's threshold
rule (``decide`` on ``dequantize``). Its latency is host time around ``invoke()``: its banner
says ``clock=host`` and every bench output carries that label.

    with Emulator("runs/NAME", 3, corrupt=0.1) as emu:
        bench_device(emu.port_path, "runs/NAME", 3)

With ``sensor=`` a ``firmware.simsensor.Track`` it is a board with sensor input (banner
``input=sensor``): ``live`` and ``capture N`` play the track at the model rate (``livemode``:
``hop``, ``speed`` of the virtual sample clock or None for free-running, ``ring`` frames).

Faults for testing the host (all off by default, reproducible with ``seed``):
    corrupt=F         each line has one byte replaced with probability F (the newline is kept)
    drop=F            each byte (newline included) is lost with probability F
    stall=S, stall_after=N   once, after N lines, stop answering for S seconds
    disconnect_after=N       after N lines the pty closes for good (the port disappears)
    reenumerate=S     on 'reset' the port disappears for S seconds and comes back as a new pty,
                      as a Nano 33 BLE re-enumerating on USB (use with link=PATH, a stable name)
    protocol_version=V       announce another protocol version (a foreign banner)
    score_offset=L    add L LSB (signed, saturating at -128..127) to the normal-class output
                      (class 0) before deciding and reporting, as a board whose kernels round
                      differently: a small L flips only windows at the threshold (a borderline
                      disagreement), a large one flips many (a real mismatch)

Threads: the serving thread owns the pty file descriptors while it runs (it reads, writes, closes
them on a disconnect or re-enumeration, and closes them when it ends); ``stop`` only closes them
itself once that thread has ended, so no descriptor is ever closed under a read in progress.
"""
from __future__ import annotations

import os
import random
from collections import deque
import select
import threading
import time
import tty

import numpy as np

from fedtiny.firmware import protocol as P
from fedtiny.trainer.rundir import REDO_DEVICE

from .rundata import BenchError, load_run_device


LOG_LINES = 100_000


class Emulator:
    def __init__(self, run_dir, device: int, *, corrupt: float = 0.0, drop: float = 0.0,
                 stall: float = 0.0, stall_after: int | None = None,
                 disconnect_after: int | None = None, seed: int = 0, n_test: int | None = None,
                 board: str = "emulator", protocol_version: int = P.PROTOCOL_VERSION,
                 link: str | None = None, reenumerate: float | None = None, score_offset: int = 0,
                 sensor=None, hop: int | None = None, speed: float | None = 1.0, ring: int | None = None):
        from fedtiny.trainer.threshold import decide, dequantize  # the trainer's rule, as is
        from tflite_micro.python.tflite_micro import runtime

        rd = load_run_device(run_dir, device)     # checks the files and the model hash
        info, self.model, x, y = rd.info, rd.model_bytes, rd.x_int8, rd.y
        if n_test is not None:
            x, y = x[:n_test], y[:n_test]
        self.x, self.y = x, y
        self.device = int(device)
        try:
            self.threshold = float(info["threshold"])
            self.out_scale = float(info["output_scale"])
            self.out_zp = int(info["output_zero_point"])
            self.n_classes = len(info["class_names"])
        except (KeyError, TypeError, ValueError) as e:
            raise BenchError(f"cannot emulate device {device} of {run_dir}: device.json lacks {e}") from None
        self.threshold_origin = rd.threshold_origin
        self.arena_bytes = int(info.get("arena_bytes") or 0)
        self.model_hash = rd.model_sha256
        self._decide = lambda q: int(decide(dequantize(q[None, :], self.out_scale, self.out_zp),
                                            self.threshold)[0])
        try:
            self.interp = runtime.Interpreter.from_bytes(self.model)
        except Exception as e:  # noqa: BLE001 - tflite-micro raises bare RuntimeError/TypeError types
            raise BenchError(f"{rd.path / 'model_int8.tflite'}: tflite-micro cannot load this model "
                             f"({type(e).__name__}: {' '.join(str(e).split())[:120]}); {REDO_DEVICE}") from None
        self.input_shape = tuple(int(s) for s in self.interp.get_input_details(0)["shape"])
        self.input_size = int(np.prod(self.input_shape))
        if len(x) and int(np.prod(x.shape[1:])) != self.input_size:
            raise BenchError(f"test split windows {x.shape[1:]} do not fit the model input {self.input_shape}")
        self.board = board
        self.protocol_version = protocol_version
        self.corrupt, self.drop = float(corrupt), float(drop)
        self.stall, self.stall_after = float(stall), stall_after
        self.disconnect_after = disconnect_after
        self.rng = random.Random(seed)
        self.link = link
        self.reenumerate = reenumerate
        self.score_offset = int(score_offset)
        self._fd_lock = threading.Lock()
        self.enumerations = 0                   # ptys opened (1 + re-enumerations)
        self.lines_sent = 0
        # the most recent lines sent (as formatted, reached the pty unaltered) and commands served,
        # for tests and diagnostics; bounded so a long `fedtiny emulate` session does not grow
        self.log: deque[tuple[str, bool]] = deque(maxlen=LOG_LINES)
        self.commands: deque[str] = deque(maxlen=LOG_LINES)
        self._stalled = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.master = self.slave = None
        self.port_path: str | None = None
        self.disconnected = False
        self._rx = bytearray()
        self._while_blocked = None              # called while a write waits for the host to read
        self._rx_overflow = False
        self.sensor = None                      # a livemode.SensorDevice when a track is played
        if sensor is not None:
            from fedtiny.live import LiveError, LiveModel

            from .livemode import SensorDevice

            try:
                model = LiveModel.from_run(run_dir, device)
            except LiveError as e:
                raise BenchError(str(e)) from None
            if len(sensor.facts.channels) != model.channels or sensor.facts.window != model.window:
                raise BenchError(f"the sensor track has {len(sensor.facts.channels)} channels and windows of "
                                 f"{sensor.facts.window}; the model wants {model.channels} and {model.window}")
            h = int(hop or sensor.facts.hop)
            if not 1 <= h <= model.window:
                raise BenchError(f"--hop {h} must be 1 to the window ({model.window} samples)")
            self.sensor = SensorDevice(sensor, model, h, self._invoke_live, speed=speed, ring=ring)

    # ------------------------------------------------------------ lifecycle
    def _open_pty(self) -> None:
        self.master, self.slave = os.openpty()
        self.enumerations += 1
        tty.setraw(self.slave)          # no echo, no line discipline: bytes as a UART gives them
        os.set_blocking(self.master, False)
        self.port_path = os.ttyname(self.slave)
        if self.link:
            self._unlink()
            os.symlink(self.port_path, self.link)

    def _unlink(self) -> None:
        try:
            if self.link and os.path.islink(self.link):
                os.unlink(self.link)
        except OSError:
            pass

    def start(self) -> "Emulator":
        try:
            self._open_pty()
        except OSError as e:                 # e.g. --link names a file that is not ours to replace
            self._close()
            raise BenchError(f"cannot serve a pseudo-terminal{f' at {self.link}' if self.link else ''}: {e}") from None
        self._thread = threading.Thread(target=self._serve, name="fedtiny-emulator", daemon=True)
        self._thread.start()
        return self

    STOP_JOIN_S = 10.0   # how long stop() waits for the serving thread

    def stop(self) -> None:
        """Stop serving and release the pty (idempotent). Waits up to ``STOP_JOIN_S`` for the
        serving thread; if it is still busy then, the thread closes the pty itself when it ends."""
        self._stop.set()
        t = self._thread
        if t is not None and t is not threading.current_thread():
            t.join(timeout=self.STOP_JOIN_S)
        if t is None or not t.is_alive():
            self._close()
        self._unlink()

    def _close(self) -> None:
        with self._fd_lock:                      # exactly once per descriptor, whoever calls
            fds = [fd for fd in (self.master, self.slave) if fd is not None]
            self.master = self.slave = None
        for fd in fds:
            try:
                os.close(fd)
            except OSError:
                pass

    def __enter__(self) -> "Emulator":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def wait(self) -> None:
        """Block until stopped (Ctrl-C in ``fedtiny emulate``) or disconnected."""
        while self._thread is not None and self._thread.is_alive():
            self._thread.join(timeout=0.5)

    # ------------------------------------------------------------ output with faults
    def _write(self, data: bytes) -> None:
        view = memoryview(data)
        while view and not self._stop.is_set():
            fd = self.master
            if fd is None:
                return
            try:
                n = os.write(fd, view)
                view = view[n:]
            except BlockingIOError:
                if self._while_blocked is not None:
                    self._while_blocked()        # the sensor's interrupt runs on while the UART blocks
                try:
                    select.select([], [fd], [], 0.01 if self._while_blocked is not None else 0.1)
                except (OSError, ValueError):
                    return
            except OSError:
                return

    def emit(self, line: str) -> None:
        if self.disconnected or self._stop.is_set():
            return
        if self.stall and self.stall_after is not None and not self._stalled \
                and self.lines_sent >= self.stall_after:
            self._stalled = True
            self._stop.wait(self.stall)
        data = bytearray(line.encode("ascii"))
        if self.corrupt and self.rng.random() < self.corrupt and len(data) > 1:
            pos = self.rng.randrange(len(data) - 1)            # never the newline
            choices = [b for b in range(1, 256) if b not in (data[pos], 0x0A)]
            data[pos] = self.rng.choice(choices)
        if self.drop:
            data = bytearray(b for b in data if self.rng.random() >= self.drop)
        self.log.append((line, bytes(data) == line.encode("ascii")))
        self._write(bytes(data))
        self.lines_sent += 1
        if self.disconnect_after is not None and self.lines_sent >= self.disconnect_after:
            self.disconnected = True
            self._close()              # the port vanishes, as an unplugged board

    # ------------------------------------------------------------ device behaviour
    def banner(self) -> str:
        return P.format_message("banner", version=self.protocol_version, board=self.board,
                                device_id=self.device, model_hash=self.model_hash,
                                arena_bytes=self.arena_bytes, threshold=self.threshold,
                                threshold_origin=self.threshold_origin, n_test=len(self.y),
                                n_classes=self.n_classes, clock="host",
                                input="sensor" if self.sensor is not None else "windows")

    def invoke(self, x: np.ndarray) -> tuple[np.ndarray, int]:
        self.interp.set_input(np.asarray(x, np.int8).reshape(self.input_shape), 0)
        t = time.perf_counter_ns()
        self.interp.invoke()
        micros = (time.perf_counter_ns() - t + 500) // 1000
        q = np.array(self.interp.get_output(0)).reshape(-1).astype(np.int8)
        if self.score_offset and len(q):
            q[0] = np.int8(np.clip(int(q[0]) + self.score_offset, -128, 127))
        return q, int(micros)

    def _invoke_live(self, x: np.ndarray) -> tuple[np.ndarray, int]:
        return self.invoke(x)

    def _poll_stop(self, timeout: float) -> bool:
        """During live/capture: True once a ``stop`` line arrived (or the emulator stops); any other
        command line is ignored, as on a board. Waits up to ``timeout`` s for input."""
        while True:
            if self._stop.is_set() or self.disconnected:
                return True
            line = self._next_line()
            if line is None:
                break
            if line is not False:
                cmd = P.parse_command(line)
                self.commands.append(cmd.type)
                if cmd.type == P.CMD_STOP:
                    return True
        fd = self.master
        if fd is None:
            return True
        try:
            r, _, _ = select.select([fd], [], [], timeout)
            if r:
                self._rx.extend(os.read(fd, 4096))
        except BlockingIOError:
            pass
        except (OSError, ValueError):
            return self._stop.is_set()
        return False

    def _next_line(self):
        """The next complete command line from the input buffer (without its newline), False for
        an overlong line (answered by the caller or ignored), None when no line is complete."""
        nl = self._rx.find(b"\n")
        if nl < 0:
            if len(self._rx) > P.CMD_MAX_LINE - 1:
                self._rx_overflow = True
                del self._rx[:]
            return None
        line = bytes(self._rx[:nl])
        del self._rx[:nl + 1]
        if self._rx_overflow or len(line) > P.CMD_MAX_LINE - 1:
            self._rx_overflow = False
            return False
        return line

    def handle(self, line: bytes) -> None:
        cmd = P.parse_command(line)
        self.commands.append(cmd.type)
        if cmd.type == P.CMD_NONE:
            return
        if cmd.type in (P.CMD_LIVE, P.CMD_CAPTURE):
            if self.sensor is None:
                self.emit(P.format_error("no_sensor", "this emulator plays no sensor (fedtiny emulate --sensor)"))
            else:
                self._while_blocked = self.sensor.tick
                try:
                    if cmd.type == P.CMD_LIVE:
                        self.sensor.live(self.emit, self._poll_stop)
                    else:
                        self.sensor.capture(cmd.count, self.emit, self._poll_stop)
                finally:
                    self._while_blocked = None
            self.emit(P.format_ready())
            return
        if cmd.type == P.CMD_STOP:
            self.emit(P.format_ready())
            return
        if cmd.type == P.CMD_INFO:
            self.emit(self.banner())
        elif cmd.type == P.CMD_RUN:
            preds, micros = [], []
            for i in range(len(self.y)):
                if self._stop.is_set() or self.disconnected:
                    return
                q, us = self.invoke(self.x[i])
                pred = self._decide(q)
                preds.append(pred)
                micros.append(us)
                self.emit(P.format_sample(i, pred, int(self.y[i]), us))
            c = P.confusion(preds, [int(v) for v in self.y])
            self.emit(P.format_summary(c["n"], c["correct"], c["tp"], c["fp"], c["tn"], c["fn"],
                                       *P.latency_summary(micros)))
        elif cmd.type == P.CMD_INFER:
            if len(cmd.payload) != self.input_size:
                self.emit(P.format_error("bad_len", f"expected {self.input_size} bytes, got {len(cmd.payload)}"))
            else:
                q, us = self.invoke(np.frombuffer(cmd.payload, dtype=np.int8))
                self.emit(P.format_infer(self._decide(q), q, us))
        elif cmd.type == P.CMD_RESET:
            self.emit(P.format_ready())
            self._stop.wait(0.05)
            if self.reenumerate is not None:           # USB device gone, then a new one
                self._unlink()
                self._close()
                self._stop.wait(self.reenumerate)
                if self._stop.is_set():
                    return
                self._open_pty()
            else:
                self._stop.wait(0.2)                   # "reboot"
            self.emit(self.banner())
        elif cmd.type in P.HEAD_COMMANDS:              # the emulator has no trainable head
            self.emit(P.format_error("no_head", "built without --trainable-head"))
        else:
            self.emit(P.format_error(cmd.error or "bad_cmd", line.strip()[:40].decode("ascii", "replace")))
        self.emit(P.format_ready())

    def _serve(self) -> None:
        try:
            self._serve_loop()
        finally:
            if self._stop.is_set():
                self._close()          # stop() leaves the descriptors to this thread while it runs

    def _serve_loop(self) -> None:
        self.emit(self.banner())       # boot: banner, ready
        self.emit(P.format_ready())
        while not self._stop.is_set() and not self.disconnected:
            fd = self.master           # only this thread replaces it while serving
            if fd is None:
                return
            try:
                r, _, _ = select.select([fd], [], [], 0.05)
            except (OSError, ValueError):
                return
            if not r:
                continue
            try:
                self._rx.extend(os.read(fd, 4096))
            except BlockingIOError:
                continue
            except OSError:
                time.sleep(0.05)       # no reader on the slave side right now
                continue
            while not self.disconnected and not self._stop.is_set():
                line = self._next_line()
                if line is None:
                    break
                if line is False:
                    self.emit(P.format_error("too_long", f"command over {P.CMD_MAX_LINE - 1} chars"))
                    self.emit(P.format_ready())
                else:
                    self.handle(line)


def main_emulate(run_dir, device: int, link: str | None = None, echo=print, **faults) -> None:
    """Serve until Ctrl-C (``fedtiny emulate``)."""
    import signal

    def _terminate(signum, frame):
        raise KeyboardInterrupt

    emu = Emulator(run_dir, device, link=link, **faults)
    signal.signal(signal.SIGTERM, _terminate)   # stop cleanly (symlink removed) on kill as on Ctrl-C
    if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
        signal.signal(signal.SIGINT, _terminate)  # started in the background by a script
    emu.start()
    try:
        echo(emu.port_path)
        where = f" (also {link})" if link else ""
        live = ""
        if emu.sensor is not None:
            speed = "free-running" if emu.sensor.speed is None else f"clock x {emu.sensor.speed:g}"
            live = f", simulated sensor at {emu.sensor.rate} Hz ({speed})"
        echo(f"emulating device {device} of {run_dir} on {emu.port_path}{where}: protocol "
             f"v{P.PROTOCOL_VERSION}, {len(emu.y)} test windows{live}, latency clock=host; Ctrl-C to stop")
        emu.wait()
        if emu.disconnected:
            echo(f"disconnected after {emu.lines_sent} lines (--disconnect-after)")
    except KeyboardInterrupt:
        pass
    finally:
        emu.stop()
