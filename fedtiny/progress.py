"""Progress reporting on the terminal (rich), behind the trainer's small Reporter interface."""
from __future__ import annotations

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from fedtiny.trainer.pipeline import Reporter

console = Console(stderr=True)


class RichReporter(Reporter):
    """One progress bar per phase (Phase 0, Phase 1, Phase 2 rounds, Phase 3 devices)."""

    def __init__(self) -> None:
        self._progress: Progress | None = None
        self._task = None

    def start(self, label: str, total: int) -> None:
        self.finish()
        self._progress = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                                  TimeElapsedColumn(), console=console, transient=False)
        self._progress.start()
        self._task = self._progress.add_task(label, total=total)

    def advance(self, n: int = 1) -> None:
        if self._progress is not None:
            self._progress.advance(self._task, n)

    def finish(self) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None

    def note(self, text: str) -> None:
        print_line(console, text, style="dim")


def print_line(con: Console, text: str, style: str | None = None) -> None:
    """Print one plain line: never wrapped (piped output keeps whole lines), no markup parsing."""
    con.print(text, style=style, soft_wrap=True, markup=False, highlight=False)
