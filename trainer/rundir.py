"""Run directory layout and crash-safe writes.

    RUN/config.json                     the TrainConfig
    RUN/metrics.jsonl                   one JSON object per phase event / round
    RUN/report.json                     per-device float/INT8 accuracy, bytes, thresholds, timings
    RUN/state/progress.json             finished steps, metrics line count (for --resume)
    RUN/state/weights-<step>.npz        the working weights after the last finished step
    RUN/devices/NAME/model_float.keras, model_int8.tflite, device.json, test_split.npz

NAME is the device's name: its folder name in a fleet-folder run (config.json ``device_names``),
else devNN (the device number, two digits).

Every file is written to a temporary name and renamed into place, so a killed run leaves either
the old or the new file, never half of one.
"""
from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path
from typing import Callable

import numpy as np


def finite_or_null(obj, where: str = "") -> tuple[object, dict[str, str]]:
    """(copy of ``obj`` with every non-finite float -- NaN, +inf, -inf, which JSON cannot hold --
    replaced by None, {path of each replaced value: "nan" / "inf" / "-inf"}). Paths read
    ``loss``, ``weights[2]``, ``a.b``."""
    if isinstance(obj, (float, np.floating)):
        v = float(obj)
        return (v, {}) if math.isfinite(v) else (None, {where or "value": repr(v)})
    if isinstance(obj, np.integer):
        return int(obj), {}
    if isinstance(obj, np.ndarray):
        return finite_or_null(obj.tolist(), where)
    if isinstance(obj, dict):
        out, bad = {}, {}
        for k, v in obj.items():
            out[k], b = finite_or_null(v, f"{where}.{k}" if where else str(k))
            bad.update(b)
        return out, bad
    if isinstance(obj, (list, tuple)):
        out, bad = [], {}
        for i, v in enumerate(obj):
            x, b = finite_or_null(v, f"{where}[{i}]")
            out.append(x)
            bad.update(b)
        return out, bad
    return obj, {}


def dumps_strict(obj, why: dict[str, str] | None = None, **kw) -> str:
    """``json.dumps`` that only ever writes strict JSON: a non-finite float becomes null, and a
    top-level dict gains ``"not_finite": {path: "nan: <why>"}`` naming each such value and why it
    is missing (``why`` maps a top-level key to the reason; default "not a finite number").
    ``allow_nan=False`` guards the result."""
    clean, bad = finite_or_null(obj)
    if bad and isinstance(clean, dict):
        why = why or {}
        clean["not_finite"] = {p: f"{v}: {why.get(p.split('.')[0].split('[')[0], 'not a finite number')}"
                               for p, v in bad.items()}
    return json.dumps(clean, allow_nan=False, **kw)


def _no_constant(name: str):
    raise ValueError(f"{name} is not JSON")


def loads_strict(text: str | bytes):
    """``json.loads`` that refuses the non-JSON constants NaN, Infinity, -Infinity (ValueError)."""
    return json.loads(text, parse_constant=_no_constant)


def atomic_write(path: Path, write: Callable) -> None:
    """``write(fh)`` into a fresh temporary file beside ``path`` (its own unique name, so several
    processes or threads writing the same file never share or steal one temporary), flushed to
    disk, then renamed over ``path``: a reader sees the old or the new file, never half of one,
    and the last rename wins. The temporary file is removed on failure."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_bytes(path: Path, data: bytes) -> None:
    atomic_write(path, lambda fh: fh.write(data))


def atomic_write_json(path: Path, obj) -> None:
    atomic_write_bytes(path, (dumps_strict(obj, indent=2) + "\n").encode())


def atomic_savez(path: Path, **arrays) -> None:
    atomic_write(path, lambda fh: np.savez(fh, **arrays))


def write_if_changed(path: Path, obj) -> bool:
    """``atomic_write_json(path, obj)`` unless ``path`` already holds ``obj``; True when written.
    Several writers of the same content then leave the file alone (no rename under a reader)."""
    try:
        if loads_strict(Path(path).read_bytes()) == obj:
            return False
    except (OSError, ValueError):
        pass
    atomic_write_json(path, obj)
    return True


class RunFileError(ValueError):
    """A run-directory file that is missing, unreadable or damaged. The message names the file and
    what to do; the CLI prints it as one ``error:`` line (exit 2)."""


REDO_DEVICE = "train the run again into a new --out (or restore the file from a copy)"


def _damaged(path: Path, e: BaseException, todo: str) -> RunFileError:
    if isinstance(e, FileNotFoundError):
        return RunFileError(f"{path} is missing; {todo}")
    why = " ".join(str(e).split()) or type(e).__name__
    return RunFileError(f"{path} is damaged or unreadable ({type(e).__name__}: {why[:160]}); {todo}")


def read_bytes(path: Path, todo: str = REDO_DEVICE) -> bytes:
    """The bytes of a run file; RunFileError (naming the file and ``todo``) when unreadable."""
    try:
        return Path(path).read_bytes()
    except OSError as e:
        raise _damaged(Path(path), e, todo) from None


def read_json(path: Path, todo: str = REDO_DEVICE):
    """A run file's JSON (strict: NaN is refused); RunFileError when missing, unreadable, cut off
    or not JSON."""
    raw = read_bytes(path, todo)
    try:
        return loads_strict(raw)
    except (ValueError, UnicodeDecodeError) as e:
        raise _damaged(Path(path), e, todo) from None


def read_npz(path: Path, keys=(), todo: str = REDO_DEVICE) -> dict[str, np.ndarray]:
    """Every array of an ``.npz`` run file, read now (``np.load`` reads lazily, so a truncated file
    would fail at first use); RunFileError when the file is missing, truncated, not an npz or lacks
    one of ``keys``."""
    import zipfile
    import zlib

    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as z:
            out = {k: np.asarray(z[k]) for k in z.files}
    except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile, zlib.error) as e:
        raise _damaged(path, e, todo) from None
    missing = [k for k in keys if k not in out]
    if missing:
        raise RunFileError(f"{path} lacks {', '.join(missing)} (written by another version?); {todo}")
    return out


def device_label(names, device: int) -> str:
    """Name of device ``device``: ``names[device]`` when the run has names, else devNN."""
    return str(names[device]) if names else f"dev{int(device):02d}"


def dataset_label(cfg) -> str:
    """What a run trained on, as its report's ``dataset`` says. A fleet-folder run (``cfg.public``
    set): "fleet of N devices (a, b, c); public pool P" with the devices' names (the first three and
    the last when there are more than six) and P the public dataset's name; the server of a
    deployment, which never sees the fleet's folder, and ``train --fleet`` write the same words.
    Any other run: its dataset."""
    if not cfg.public:
        return str(cfg.dataset)
    names = [device_label(cfg.device_names, i) for i in range(cfg.devices)]
    shown = names if len(names) <= 6 else names[:3] + ["...", names[-1]]
    pool = Path(cfg.public).name or str(cfg.public)
    return f"fleet of {len(names)} device{'s' if len(names) != 1 else ''} ({', '.join(shown)}); public pool {pool}"


def run_device_names(run: Path) -> list[str]:
    """The ``device_names`` of RUN/config.json ([] when absent or unreadable: devNN names)."""
    try:
        return list(json.loads((Path(run) / "config.json").read_text()).get("device_names") or [])
    except (OSError, ValueError, AttributeError):
        return []


def device_dir(run: Path, device: int, names=None) -> Path:
    """RUN/devices/NAME of device number ``device`` (``names`` None: read from RUN/config.json)."""
    names = run_device_names(run) if names is None else names
    return Path(run) / "devices" / device_label(names, device)


def resolve_device(run: Path, device) -> int:
    """Device number of ``device`` given as a number or a name (ValueError naming the known ones)."""
    names = run_device_names(run)
    text = str(device).strip()
    if text in names:
        return names.index(text)
    if text.isdigit():
        return int(text)
    raise ValueError(f"run {run} has no device named {text!r}"
                     + (f" (devices: {', '.join(names)})" if names else " (its devices are numbered)"))


def save_weights(path: Path, weights) -> None:
    atomic_savez(path, **{f"w{i:03d}": np.asarray(w) for i, w in enumerate(weights)})


def load_weights(path: Path, todo: str = REDO_DEVICE) -> list[np.ndarray]:
    z = read_npz(path, todo=todo)
    return [z[k] for k in sorted(z)]


class Metrics:
    """Append-only JSON-lines log whose length is recorded in each checkpoint."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.lines = 0
        if self.path.exists():
            self.lines = self.path.read_bytes().count(b"\n")

    def truncate(self, n: int) -> None:
        """Keep the first n complete lines (those covered by the last checkpoint)."""
        kept = self.path.read_bytes().split(b"\n")[:-1][:n] if self.path.exists() else []
        atomic_write_bytes(self.path, b"".join(line + b"\n" for line in kept))
        self.lines = len(kept)

    def resume(self, n: int) -> list[str]:
        """``check(n)``, then keep the first ``n`` lines; returns the warnings."""
        warnings = self.check(n)
        self.truncate(n)
        return warnings

    def check(self, n: int) -> list[str]:
        """Check (read only) the log against a checkpoint that covers its first ``n`` lines;
        returns warnings. Lines after the first ``n`` belong to a step that was
        not finished (it is redone), and a last line without its newline is what a crash in the
        middle of a write leaves: both are dropped. RunFileError when one of the ``n`` covered
        lines is missing (the log was cut: finished rounds would be lost) or is not JSON."""
        raw = read_bytes(self.path, RESUME_ELSEWHERE) if self.path.exists() else b""
        complete = raw.split(b"\n")
        partial = complete.pop()                      # b"" when the file ends with a newline
        warnings = []
        if len(complete) < n:
            raise RunFileError(f"{self.path} holds {len(complete)} complete lines but the last checkpoint "
                               f"covers {n}: the log was cut and finished steps' metrics are lost; "
                               f"{RESUME_ELSEWHERE}")
        for i, line in enumerate(complete[:n], 1):
            try:
                rec = json.loads(line)
            except (ValueError, UnicodeDecodeError) as e:
                raise RunFileError(f"{self.path} line {i} is broken ({e}); {RESUME_ELSEWHERE}") from None
            if not isinstance(rec, dict):
                raise RunFileError(f"{self.path} line {i} is not a JSON object; {RESUME_ELSEWHERE}")
        if partial:
            warnings.append(f"{self.path}: dropped an unfinished last line ({len(partial)} bytes, left by a "
                            "crash during a write); its step is done again")
        return warnings

    def log(self, record: dict, why: dict[str, str] | None = None) -> None:
        """Append ``record`` as one strict JSON line (``dumps_strict``: a NaN loss is written as
        null and named, with ``why``, in the line's ``not_finite``)."""
        with open(self.path, "a") as f:
            f.write(dumps_strict(record, why) + "\n")
        self.lines += 1


RESUME_ELSEWHERE = "the run cannot be resumed safely: train again into a new --out"

LOCK_FILE = ".lock"


class RunLocked(RunFileError):
    """Another process holds the folder's lock."""


class FolderLock:
    """An exclusive ``fcntl.flock`` on ``FOLDER/.lock`` for as long as a process writes the
    folder (a run directory, an experiment folder), so two processes never write the same one.
    The lock file names its holder (pid and command line); a second process gets RunLocked naming
    it. The lock dies with its process (a crash or kill -9 never leaves a stale lock). Released,
    the file is removed."""

    def __init__(self, folder: Path):
        self.folder = Path(folder)
        self.path = self.folder / LOCK_FILE
        self.fd: int | None = None

    def acquire(self) -> "FolderLock":
        import fcntl
        import sys

        self.folder.mkdir(parents=True, exist_ok=True)
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.pread(fd, 4096, 0).decode(errors="replace").strip() or "another process"
                os.close(fd)
                raise RunLocked(f"{self.folder} is in use by {holder}; wait until it ends or choose "
                                "another --out") from None
            try:                          # the file we locked may have been removed by its last holder
                same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} ({' '.join(sys.argv)[:300]})\n".encode(), 0)
        self.fd = fd
        return self

    def release(self) -> None:
        if self.fd is None:
            return
        import fcntl

        self.path.unlink(missing_ok=True)
        fcntl.flock(self.fd, fcntl.LOCK_UN)
        os.close(self.fd)
        self.fd = None

    def __enter__(self) -> "FolderLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()
