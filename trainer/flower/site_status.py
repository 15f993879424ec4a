"""What a site says on its terminal (``fedtiny site``): its SuperNode's state read off the SuperNode's
log, plus the runs the gate refused (``gate.py``), as one short line per change.

``status_lines(new_text, server)`` is pure: the status lines of a chunk of ``flower-supernode``
output (Flower 1.42's wording: "Connection attempt failed, retrying in X seconds" while the
SuperLink is unreachable, Flower retrying with exponential backoff itself; "SuperNode ID: N" once
it joined; "Failed to activate SuperNode" when node authentication refused its key, after which
flower-supernode exits with code 305). ``Follow`` reads the new part of a growing log file.
"""
from __future__ import annotations

import re
from pathlib import Path

_RETRY = re.compile(r"Connection attempt failed, retrying in ([0-9.]+) seconds")
_JOINED = re.compile(r"SuperNode ID: (-?\d+)")
_AUTH = re.compile(r"Failed to activate SuperNode")


def status_lines(text: str, server: str) -> list[str]:
    """Status lines of a chunk of SuperNode log (module doc); repeated retries give one line each
    with the next wait, so the terminal shows the backoff growing."""
    out = []
    for line in text.splitlines():
        if m := _RETRY.search(line):
            out.append(f"waiting for server {server} (unreachable; retrying in {float(m.group(1)):.0f} s)")
        elif m := _JOINED.search(line):
            out.append(f"connected to server {server} (node {m.group(1)})")
        elif _AUTH.search(line):
            out.append(f"refused (identity): the server {server} does not accept this site's key (the "
                       "server's sites.toml must list this site's .pub for its device)")
    return out


class Follow:
    """The text appended to ``path`` since the last ``read()`` (whole lines only)."""

    def __init__(self, path: Path):
        self.path, self.pos = Path(path), 0

    def read(self) -> str:
        if not self.path.exists():
            return ""
        with open(self.path, "rb") as f:
            f.seek(self.pos)
            chunk = f.read()
        cut = chunk.rfind(b"\n") + 1
        self.pos += cut
        return chunk[:cut].decode(errors="replace")
