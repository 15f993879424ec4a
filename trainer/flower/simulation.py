"""``fedtiny train --engine flower-sim``: the same run through Flower's simulation engine
(``flwr.simulation.run_simulation``, Ray backend).

The server (``pipeline.Run``) runs inside our ServerApp's ``main`` (Flower runs it in a thread of
this process) and reaches the N virtual SuperNodes through ``FlowerBackend``; each node runs
``client_app.app`` in a Ray worker, where one ``SiteService`` (one TF engine) per worker answers
it. Ray keeps its files in a fresh temporary folder (not /tmp/ray), gets one CPU per worker and
no dashboard, and every port it opens listens on 127.0.0.1 only (``ray_on_loopback``;
``tests/test_fleet_runs.py`` lists the process tree's listening sockets). The sites write their
artifacts (and test windows) into the run directory itself, since in a simulation they are on
this machine.

Ctrl-C (SIGINT) or SIGTERM reaches Flower's main loop in the main thread; the ServerApp thread would
go on waiting for replies from the stopped engine, and Python waits for it before exiting. So the
interrupt is raised in that thread too (``ServerStopped``, at its next Python instruction: the run
stops where it is, as the in-process engine does; every written step is kept for ``--resume``),
Ray is shut down (its processes end) and the threads Flower started are joined, with further
signals ignored meanwhile; a thread still stuck in native code after ``STOP_GRACE`` seconds ends
the process (exit 130) rather than keep it alive. With ``exit_on_interrupt`` (the command line) the
process then leaves at once with exit 130 once that cleanup is done: the interpreter's own shutdown
after a stopped simulation took about 10 s more (in native code, no Python frame left: what Ray's
and gRPC's threads leave behind), and every file of the run is written and closed by then.
"""
from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import shutil
import signal
import sys
import tempfile
import threading
from pathlib import Path

from ..data.fleet import DataError
from ..pipeline import Run, RunError
from .factory import FlowerFactory


RAY_TMP_MAX = 20       # longest temporary-folder path Ray's socket paths fit after
STOP_GRACE = 30.0      # seconds the stopped ServerApp and Flower's threads get to end after Ctrl-C
THREAD_GRACE = 5.0     # of which Flower's threads get this long once Ray's processes are gone


class ServerStopped(BaseException):
    """Raised inside the ServerApp thread to stop the run after Ctrl-C / SIGTERM in the main thread
    (a BaseException, like KeyboardInterrupt, so no ``except Exception`` swallows it)."""


def _raise_in_thread(thread: threading.Thread, exc: type[BaseException]) -> None:
    """Make ``thread`` raise ``exc`` at its next Python instruction (CPython's async exception)."""
    if thread.ident is not None and thread.is_alive():
        ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(thread.ident), ctypes.py_object(exc))


@contextlib.contextmanager
def _signals_ignored():
    """SIGINT and SIGTERM are ignored meanwhile (a second Ctrl-C must not break the cleanup)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    old = {s: signal.signal(s, signal.SIG_IGN) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)


def _stop_threads(server_thread: threading.Thread | None, before: set[threading.Thread], mark: str) -> bool:
    """After an interrupt: stop the ServerApp thread, shut Ray down and end every process of it
    (``_reap``), and join every non-daemon thread started since ``before`` (Flower's workers end
    once its stop event is set), within ``STOP_GRACE`` seconds in all. Flower's threads get
    ``THREAD_GRACE`` of it: one still blocked in Ray's ``ray.get`` then waits for a process that
    is gone (seen under load: a Flower worker thread that outlived the whole 30 s grace). True
    when all of them ended."""
    import time

    deadline = time.monotonic() + STOP_GRACE
    if server_thread is not None and server_thread.is_alive():
        _raise_in_thread(server_thread, ServerStopped)
        server_thread.join(max(0.0, deadline - time.monotonic()))
    _ray_shutdown()
    _reap(mark)
    deadline = min(deadline, time.monotonic() + THREAD_GRACE)
    left = [t for t in threading.enumerate() if t not in before and not t.daemon and t.is_alive()
            and t is not threading.current_thread()]
    for t in left:
        t.join(max(0.0, deadline - time.monotonic()))
    return not any(t.is_alive() for t in left)


class InterruptWatch(logging.Filter):
    """Knows, from the moment the signal arrives, that SIGINT or SIGTERM came (through Python's
    signal wake-up fd, written by the C-level handler before any thread of this process runs on),
    and, as a logging filter, drops Flower's error reports from then on: the Ray workers that
    the same Ctrl-C killed are no error to report."""

    STOP = {signal.SIGINT, signal.SIGTERM}

    def __init__(self) -> None:
        super().__init__()
        self.fired = False
        self._r = self._w = None
        self._old = -1
        if threading.current_thread() is threading.main_thread():
            self._r, self._w = os.pipe()
            os.set_blocking(self._r, False)
            os.set_blocking(self._w, False)
            self._old = signal.set_wakeup_fd(self._w, warn_on_full_buffer=False)

    def interrupted(self) -> bool:
        while not self.fired and self._r is not None:
            try:
                got = os.read(self._r, 64)
            except BlockingIOError:
                break
            if not got:
                break
            self.fired = any(b in self.STOP for b in got)
        return self.fired

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno < logging.ERROR or not self.interrupted()

    def close(self) -> None:
        if self._r is not None:
            signal.set_wakeup_fd(self._old)
            os.close(self._r)
            os.close(self._w)
            self._r = self._w = None


RAY_MARK = "FEDTINY_RAY_OWNER"


def _marked(value: str) -> list[int]:
    """Pids of the live processes whose environment carries ``RAY_MARK=value`` (every process Ray
    starts inherits the driver's environment, also once reparented when the raylet died)."""
    want = f"{RAY_MARK}={value}".encode()
    out = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit() and int(d.name) != os.getpid():
            try:
                if want in (d / "environ").read_bytes().split(b"\0"):
                    out.append(int(d.name))
            except OSError:
                continue
    return out


def _reap(value: str, grace: float = 5.0) -> None:
    """SIGTERM, then after ``grace`` seconds SIGKILL, every process left of this run's Ray
    (a Ray worker whose raylet died with the same Ctrl-C outlives ``ray.shutdown``)."""
    import time

    if not Path("/proc/self/environ").exists():
        return
    for sig in (signal.SIGTERM, signal.SIGKILL):
        pids = _marked(value)
        for pid in pids:
            try:
                os.kill(pid, sig)
            except (ProcessLookupError, PermissionError):
                pass
        deadline = time.monotonic() + grace
        while pids and time.monotonic() < deadline:
            time.sleep(0.1)
            pids = _marked(value)
        if not pids:
            return


def _ray_shutdown() -> None:
    """End this driver's Ray (its GCS, raylet and worker processes)."""
    try:
        import ray
    except ImportError:
        return
    if ray.is_initialized():
        ray.shutdown()


def _exit_interrupted() -> None:
    """The last resort when a thread stays stuck in native code: leave now with exit code 130."""
    sys.stderr.write("error: interrupted; finished steps are kept: run the same command again with "
                     "--resume to continue\n")
    sys.stderr.flush()
    sys.stdout.flush()
    os._exit(130)


def _short_temp_dir() -> str | None:
    """The temporary folder for Ray's: ``$TMPDIR`` unless its path is too long for the Unix
    sockets Ray makes in it (AF_UNIX paths end at 107 bytes, and Ray adds about 85), then /tmp."""
    base = tempfile.gettempdir()
    return base if len(base) <= RAY_TMP_MAX or not os.path.isdir("/tmp") else "/tmp"


def ray_on_loopback() -> None:
    """Make Ray bind every server it starts (GCS, raylet, workers, agents) to 127.0.0.1.

    Ray 2.55 replaces a node address of 127.0.0.1 by the machine's external address
    (``ray._private.services.resolve_ip_for_localhost``) whenever its multi-machine mode is on,
    which is the Linux default, and then listens on all interfaces. Turning that mode off
    (``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0``, read at import and inherited by Ray's processes; the
    module constant too, in case Ray is imported already) keeps the node on the loopback address."""
    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    try:
        from ray._private import ray_constants
    except ImportError:
        return
    ray_constants.ENABLE_RAY_CLUSTER = False


class FlowerSim(FlowerFactory):
    name = "flower-sim"
    runs = "--engine flower-sim"
    instead = "--engine inprocess"

    def __init__(self, timeout: float = 900.0, wait: float = 300.0):
        self.timeout, self.wait = timeout, wait
        self.grid = None
        self.backend = None

    def check(self, cfg) -> None:
        import importlib.util

        if importlib.util.find_spec("ray") is None:
            raise DataError(f"--engine {self.name} needs Ray: pip install -e \".[simulation]\" "
                            "(flwr[simulation]==1.42.0)")
        super().check(cfg)

    def backend_options(self, run: Run) -> dict:
        return {"site_dir": str(Path(run.out).absolute())}


def train_sim(cfg, out, resume=False, reporter=None, until=None, min_sites=1, factory=None,
              num_cpus: int | None = None, exit_on_interrupt: bool = False):
    """Run (or resume) ``cfg`` into ``out`` on Flower's simulation engine; returns the report
    (None with ``until``), like ``pipeline.train``. Ctrl-C raises KeyboardInterrupt after the
    cleanup, or with ``exit_on_interrupt`` (for a command line, never a library caller) prints the
    one ``error: interrupted`` line and ends the process with exit code 130."""
    factory = factory or FlowerSim()
    run = Run(cfg, out, resume, reporter, factory, min_sites)     # every check before any import
    if resume and until is None:
        done = run.finished_report()
        if done is not None:
            run.rep.note(f"{out} is already finished; nothing to resume (its report follows)")
            return done
    from ..tfquiet import import_tensorflow

    import_tensorflow()          # flwr.simulation imports TensorFlow; quietly, as everywhere else
    ray_on_loopback()            # before flwr.simulation imports Ray
    from flwr.serverapp import ServerApp
    from flwr.simulation import run_simulation

    from . import client_app
    result = {}
    server_app = ServerApp()

    @server_app.main()
    def main(grid, context) -> None:
        result["thread"] = threading.current_thread()
        factory.grid = grid
        try:
            result["report"] = run.execute(until)
        except ServerStopped:
            result["stopped"] = True

    ray_dir = tempfile.mkdtemp(prefix="fedtiny-ray-", dir=_short_temp_dir())
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    os.environ.setdefault("RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO", "0")    # CPU only: silence Ray's tip
    cpus = num_cpus or max(1, min(cfg.devices, os.cpu_count() or 1))
    backend_config = {"init_args": {"num_cpus": cpus, "_temp_dir": ray_dir, "include_dashboard": False,
                                    "_node_ip_address": "127.0.0.1", "logging_level": logging.ERROR,
                                    "log_to_driver": False},
                      "client_resources": {"num_cpus": 1, "num_gpus": 0.0}}
    logging.getLogger("flwr").setLevel(logging.WARNING)
    threads_before = set(threading.enumerate())
    hook = threading.excepthook

    def quiet_stop(args):                # ServerStopped landing outside main(): no thread traceback
        if not issubclass(args.exc_type, ServerStopped):
            hook(args)

    threading.excepthook = quiet_stop
    watch = InterruptWatch()
    flwr_log = logging.getLogger("flwr")
    flwr_log.addFilter(watch)
    mark = f"{os.getpid()}:{ray_dir}"
    old_mark = os.environ.get(RAY_MARK)
    os.environ[RAY_MARK] = mark
    try:
        run_simulation(server_app=server_app, client_app=client_app.app, num_supernodes=cfg.devices,
                       backend_config=backend_config)
    except RuntimeError as e:
        cause = e.__cause__ or e
        if isinstance(cause, (DataError,)):
            raise cause from None
        raise
    except KeyboardInterrupt:
        with _signals_ignored():
            if not _stop_threads(result.get("thread"), threads_before, mark):
                _reap(mark)
                shutil.rmtree(ray_dir, ignore_errors=True)
                _exit_interrupted()
        if not exit_on_interrupt:
            raise
        result["interrupted"] = True
    finally:
        with _signals_ignored():
            _ray_shutdown()
            _reap(mark)
            shutil.rmtree(ray_dir, ignore_errors=True)
            run.rep.finish()
        if old_mark is None:
            os.environ.pop(RAY_MARK, None)
        else:
            os.environ[RAY_MARK] = old_mark
        threading.excepthook = hook
        flwr_log.removeFilter(watch)
        watch.close()
    if result.get("interrupted"):
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGINT, signal.SIG_IGN)    # the exit stays 130 whatever comes now
        _exit_interrupted()
    if "report" not in result and until is None:
        raise RunError("the Flower simulation ended without finishing the run (see the log above)")
    return result.get("report")
