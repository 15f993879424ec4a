"""Cache of decoded data files (per file).

An entry is keyed by the SHA-256 of the file's bytes, the kind of decoding and the loader's version:

    <cache dir>/<kind>-v<version>-<sha256>.bin

so an edited file, or a loader whose decoding changed (its version is bumped), never meets a stale
entry; renaming or moving a file keeps its entry. Hashing every file on every load would cost about
as much as decoding it, so the SHA-256 itself is remembered per (absolute path, size, mtime_ns,
inode) in ``<cache dir>/stat/``: a file whose size, modification time or inode changed is hashed
again (as ``git`` and ``make`` trust the same stat fields). The cache dir is ``$FEDTINY_CACHE`` when set, else
``~/.cache/fedtiny``. Entries are written to a temporary file in the same folder and renamed into
place (atomic on POSIX), so a crash leaves either no entry or a whole one; an unreadable entry is
ignored and rewritten. Values are stored exactly (float64 stays float64), so a cached load gives the
same arrays as a fresh one. ``enabled=False`` (``--no-cache``) neither reads nor writes.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Callable

import numpy as np

from ..rundir import atomic_write


def cache_dir() -> Path:
    env = os.environ.get("FEDTINY_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "fedtiny"


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


# version 2: entries of version 1 stored 0-d arrays as shape (1,) (a cached CSV ``form`` read back
# as "['detect']"); their magic no longer matches, so they are decoded again and rewritten
MAGIC = b"fedtiny-cache 2\n"


def pack(value: dict) -> bytes:
    """Arrays of ``value`` as one byte string (see the module doc). Every array keeps its shape
    (a 0-d array stays 0-d: ``np.ascontiguousarray`` alone would make it shape (1,)) and dtype."""
    head, blobs, off = {}, [], 0
    for k, v in value.items():
        a = np.asarray(v)
        a = np.ascontiguousarray(a).reshape(a.shape)
        if a.dtype.hasobject:
            raise TypeError(f"cannot cache object array {k!r}")
        head[k] = [a.dtype.str, list(a.shape), off, a.nbytes]
        blobs.append(a.tobytes())
        off += a.nbytes
    return MAGIC + json.dumps(head).encode() + b"\n" + b"".join(blobs)


def unpack(raw: bytes) -> dict:
    """Inverse of ``pack``; ValueError for anything else (a damaged or foreign file)."""
    if not raw.startswith(MAGIC):
        raise ValueError("not a fedtiny cache entry")
    nl = raw.index(b"\n", len(MAGIC))
    head = json.loads(raw[len(MAGIC):nl])
    body = memoryview(raw)[nl + 1:]
    out = {}
    for k, (dt, shape, off, n) in head.items():
        if off + n > len(body):
            raise ValueError("truncated cache entry")
        out[k] = np.frombuffer(body[off:off + n], dtype=np.dtype(dt)).reshape(shape)
    return out


def known_sha256(path: Path) -> str:
    """The file's SHA-256, from the stat memo when path, size, mtime_ns and inode are unchanged."""
    st = path.stat()
    key = hashlib.sha1(f"{os.path.abspath(path)}\0{st.st_size}\0{st.st_mtime_ns}\0{st.st_ino}".encode()).hexdigest()
    memo = cache_dir() / "stat" / key
    try:
        sha = memo.read_text().strip()
        if len(sha) == 64:
            return sha
    except OSError:
        pass
    sha = file_sha256(path)
    try:
        atomic_write(memo, lambda fh: fh.write(sha.encode()))
    except OSError:
        pass
    return sha


def cached(path, kind: str, version: int, compute: Callable[[], dict], enabled: bool = True) -> dict:
    """``compute()`` (a dict of arrays) for the file ``path``, from the cache when an entry exists."""
    if not enabled:
        return compute()
    try:
        sha = known_sha256(Path(path))
    except OSError:
        return compute()              # the loader reports the unreadable file itself
    entry = cache_dir() / f"{kind}-v{version}-{sha}.bin"
    try:
        return unpack(entry.read_bytes())
    except (OSError, ValueError, TypeError, KeyError):     # none yet, or damaged: decode (again)
        pass
    value = compute()
    try:
        atomic_write(entry, lambda fh: fh.write(pack(value)))
    except OSError:
        pass                          # a read-only or full cache dir only costs speed
    return value
