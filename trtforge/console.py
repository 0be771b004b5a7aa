"""Human output, always on stderr (stdout is for ``--json``): rich in a terminal, plain
timestamped lines in CI logs."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rich.console import Console


#: CI logs are not terminals; rich would wrap tables at 80 columns there.
CI_LOG_WIDTH = 160


class Reporter:
    """Where every human-readable line goes; ``interactive`` picks rich progress or log lines."""

    def __init__(self, console: Console | None = None, interactive: bool | None = None) -> None:
        if console is None:
            from rich.console import Console

            console = Console(stderr=True, highlight=False, soft_wrap=True)
            if not console.is_terminal:
                console.width = max(console.width, CI_LOG_WIDTH)
        self.console = console
        self.interactive = console.is_terminal if interactive is None else interactive

    def _line(self, text: str, style: str | None = None) -> None:
        if self.interactive:
            self.console.print(text, style=style, markup=False)
        else:
            stamp = time.strftime("%H:%M:%S")
            self.console.print(f"{stamp} {text}", markup=False, highlight=False)

    def info(self, text: str) -> None:
        self._line(text)

    def success(self, text: str) -> None:
        self._line(text, "green")

    def warn(self, text: str) -> None:
        self._line(f"warning: {text}", "yellow")

    def error(self, text: str) -> None:
        self._line(f"error: {text}", "bold red")

    def render(self, renderable: Any) -> None:
        self.console.print(renderable)

    @contextmanager
    def build_progress(self, label: str) -> Iterator[_ProgressMonitor]:
        """A BuildMonitor: a rich progress bar per TensorRT phase, or a line per phase."""
        if not self.interactive:
            yield _ProgressMonitor(self, None, label)
            return
        from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

        progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            TextColumn("{task.completed}/{task.total}"),
            TimeElapsedColumn(),
            console=self.console,
            transient=True,
        )
        with progress:
            yield _ProgressMonitor(self, progress, label)


class _ProgressMonitor:
    """Adapts TensorRT's IProgressMonitor callbacks (see backends.base.BuildMonitor)."""

    def __init__(self, reporter: Reporter, progress: Any, label: str) -> None:
        self.reporter = reporter
        self.progress = progress
        self.label = label
        self.tasks: dict[str, Any] = {}
        self.started: dict[str, float] = {}

    def phase_start(self, phase: str, parent: str | None, steps: int) -> None:
        self.started[phase] = time.perf_counter()
        if self.progress is not None:
            self.tasks[phase] = self.progress.add_task(f"{self.label}: {phase}", total=max(steps, 1))
        elif parent is None:
            self.reporter.info(f"{self.label}: {phase} ({steps} steps)")

    def step(self, phase: str, step: int) -> None:
        if self.progress is not None and phase in self.tasks:
            self.progress.update(self.tasks[phase], completed=step + 1)

    def phase_finish(self, phase: str) -> None:
        if self.progress is not None and phase in self.tasks:
            self.progress.remove_task(self.tasks.pop(phase))

    def note(self, message: str) -> None:
        self.reporter.info(message)
