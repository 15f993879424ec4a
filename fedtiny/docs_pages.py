"""Which documentation page each command belongs to, and the line that ends its help.

The pages are Markdown files under ``docs/`` (the MkDocs site's sources, in a checkout of the
repository); ``tests/test_docs_site.py`` checks that every command reachable from ``fedtiny`` has a
page here, that its help ends with :func:`docs_line`, and that the page exists and is in the
site's navigation.
"""
from __future__ import annotations

import click

# command path without the leading "fedtiny" ("" is fedtiny itself) -> page under docs/.
# A subcommand without an entry of its own belongs to its group's page.
PAGES = {
    "": "index.md",
    "train": "reference/training.md",
    "build": "how-to/flash-a-board.md",
    "flash": "how-to/flash-a-board.md",
    "bench": "how-to/bench.md",
    "emulate": "how-to/emulator.md",
    "compare": "how-to/compare-ablate.md",
    "ablate": "how-to/compare-ablate.md",
    "report": "reference/run-directory.md",
    "demo": "tutorials/first-run.md",
    "server": "reference/federation.md",
    "site": "tutorials/federation.md",
    "data": "reference/fleet-folder.md",
    "data export": "tutorials/own-fleet.md",
    "personalize": "board-learning.md",
    "monitor": "monitor-capture.md",
    "capture": "monitor-capture.md",
}


def page_for(path: str) -> str | None:
    """The page of the command at ``path`` ("data check"): its own entry, else its nearest group's
    (a top-level command never falls back to fedtiny's own page); None when there is none."""
    words = path.split()
    while words:
        key = " ".join(words)
        if key in PAGES:
            return PAGES[key]
        words.pop()
    return PAGES[""] if not path.split() else None


def docs_line(page: str) -> str:
    """The last line of a command's help: ``Docs: docs/PAGE``."""
    return f"Docs: docs/{page}"


def with_docs_line(cmd: click.Command, path: str) -> click.Command:
    """``cmd`` (at command path ``path``, without "fedtiny") with its help ending in its page's
    docs line, and the same for every subcommand of a group; a command without a page is left
    as it is (the test names it). Returns ``cmd``."""
    page = page_for(path)
    if page is not None:
        line = docs_line(page)
        if not (cmd.epilog or "").rstrip().endswith(line):
            cmd.epilog = f"{cmd.epilog.rstrip()}\n\n{line}" if cmd.epilog else line
    for name, sub in getattr(cmd, "commands", {}).items():
        with_docs_line(sub, f"{path} {name}".strip())
    return cmd
