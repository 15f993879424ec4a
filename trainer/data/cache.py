"""Cache of decoded data files (per file; NumPy ``.npz``).

An entry is keyed by the SHA-256 of the file's bytes, the kind of decoding and the loader's version:

    <cache dir>/<kind>-v<version>-<sha256>.npz

so an edited file, or a loader whose decoding changed (its version is bumped), never meets a stale
entry; renaming or moving a file keeps its entry. The cache dir is ``$FEDTINY_CACHE`` when set, else
``~/.cache/fedtiny``. Entries are written to a temporary file in the same folder and renamed into
place (atomic on POSIX), so a crash leaves either no entry or a whole one; an unreadable entry is
ignored and rewritten. Values are stored exactly (float64 stays float64), so a cached load gives the
same arrays as a fresh one. ``enabled=False`` (``--no-cache``) neither reads nor writes.
"""
from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path
from typing import Callable

import numpy as np


def cache_dir() -> Path:
    env = os.environ.get("FEDTINY_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "fedtiny"


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def cached(path, kind: str, version: int, compute: Callable[[], dict], enabled: bool = True) -> dict:
    """``compute()`` (a dict of arrays) for the file ``path``, from the cache when an entry exists."""
    if not enabled:
        return compute()
    try:
        sha = file_sha256(Path(path))
    except OSError:
        return compute()              # the loader reports the unreadable file itself
    entry = cache_dir() / f"{kind}-v{version}-{sha}.npz"
    if entry.is_file():
        try:
            with np.load(entry, allow_pickle=False) as z:
                return {k: z[k] for k in z.files}
        except Exception:             # a damaged entry: decode again and replace it
            pass
    value = compute()
    try:
        entry.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=entry.parent, prefix=".tmp-", suffix=".npz")
        try:
            with os.fdopen(fd, "wb") as fh:
                np.savez(fh, **value)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, entry)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    except OSError:
        pass                          # a read-only or full cache dir only costs speed
    return value
