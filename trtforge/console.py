"""Human output, always on stderr (stdout is for ``--json``): rich in a terminal, plain
timestamped lines in CI logs."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from trtforge.errors import one_line

if TYPE_CHECKING:
    from rich.console import Console
    from rich.text import Text


#: CI logs are not terminals; rich would wrap tables at 80 columns there.
CI_LOG_WIDTH = 160


def plain_stderr() -> bool:
    """True when rich would see no terminal on stderr (``rich.console.Console.is_terminal``: its
    environment variables, then ``isatty``): log lines then go out as plain text, without
    importing rich (~25 ms of every ``ci`` and ``check`` in a CI log)."""
    tty_compatible = os.environ.get("TTY_COMPATIBLE", "")
    if tty_compatible in ("0", "1"):
        return tty_compatible == "0"
    force_color = os.environ.get("FORCE_COLOR")
    if force_color is not None:
        return force_color == ""
    isatty = getattr(sys.stderr, "isatty", None)
    return not (isatty is not None and isatty())


@dataclass(frozen=True)
class Styled:
    """Text with a rich style (``"green"``, ``"bold red"``): in colour in a terminal, plain in a log."""

    text: str
    style: str


#: a table cell or a part of its title: plain text (never read as rich markup) or styled text
Cell = str | Styled


@dataclass
class Table:
    """What a command shows as a table: rich's table in a terminal; in a CI log, aligned plain lines
    written without importing rich (rich.table and its console cost ~50 ms of every gated build and
    every ``ci`` run there). Built like rich's: columns given, then ``add_row``."""

    title: tuple[Cell, ...]
    columns: Sequence[str]
    right: frozenset[str] = frozenset()  # columns aligned right (numbers)
    header: bool = True
    no_wrap: bool = False  # rich: cells are not wrapped (a log is never wrapped)
    rows: list[tuple[Cell, ...]] = field(default_factory=list)

    def add_row(self, *cells: Cell) -> None:
        self.rows.append(cells)

    def plain_lines(self) -> list[str]:
        """The title, the header and one line per row, columns padded to their widest cell."""
        body = [tuple(_plain(cell) for cell in row) for row in self.rows]
        shown = [tuple(self.columns), *body] if self.header else body
        widths = [max((len(row[index]) for row in shown), default=0) for index in range(len(self.columns))]
        lines = ["".join(_plain(part) for part in self.title)]
        for row in shown:
            cells = (
                cell.rjust(width) if column in self.right else cell.ljust(width)
                for cell, width, column in zip(row, widths, self.columns, strict=True)
            )
            lines.append("  " + "  ".join(cells).rstrip())
        return lines

    def to_rich(self) -> Any:
        from rich.table import Table as RichTable

        table = RichTable(title=_rich_text(*self.title), title_justify="left", show_header=self.header)
        for column in self.columns:
            table.add_column(column, justify="right" if column in self.right else "left", no_wrap=self.no_wrap)
        for row in self.rows:
            table.add_row(*(_rich_text(cell) for cell in row))
        return table


def _plain(cell: Cell) -> str:
    """A cell's text, on one line (``one_line``): a column is as wide as its widest cell."""
    return one_line(cell.text if isinstance(cell, Styled) else cell)


def _rich_text(*parts: Cell) -> Text:
    from rich.text import Text

    text = Text()
    for part in parts:
        if isinstance(part, Styled):
            text.append(_plain(part), style=part.style)
        else:
            text.append(_plain(part))
    return text


class Reporter:
    """Where every human-readable line goes; ``interactive`` picks rich progress or log lines.
    Without a console of its own and outside a terminal, lines and tables are written directly,
    without rich."""

    def __init__(self, console: Console | None = None, interactive: bool | None = None) -> None:
        self._console = console
        self._plain = console is None and not interactive and plain_stderr()
        if self._plain:
            self.interactive = False
        else:
            self.interactive = self.console.is_terminal if interactive is None else interactive

    @property
    def console(self) -> Console:
        if self._console is None:
            from rich.console import Console

            console = Console(stderr=True, highlight=False, soft_wrap=True)
            if not console.is_terminal:
                console.width = max(console.width, CI_LOG_WIDTH)
            self._console = console
        return self._console

    def _line(self, text: str, style: str | None = None) -> None:
        if self.interactive:
            self.console.print(text, style=style, markup=False)
            return
        line = f"{time.strftime('%H:%M:%S')} {text}"
        if self._plain:
            sys.stderr.write(line + "\n")
            sys.stderr.flush()
        else:
            self.console.print(line, markup=False, highlight=False)

    def info(self, text: str) -> None:
        self._line(text)

    def success(self, text: str) -> None:
        self._line(text, "green")

    def warn(self, text: str) -> None:
        """One line (``one_line``), whatever values it repeats; so is ``error``'s (progress lines
        may hold a block to copy, as the YAML of a sensitivity search's exclusions)."""
        self._line(f"warning: {one_line(text)}", "yellow")

    def error(self, text: str) -> None:
        self._line(f"error: {one_line(text)}", "bold red")

    def render(self, table: Table) -> None:
        if self._plain:
            for line in table.plain_lines():
                self._line(line)
        else:
            self.console.print(table.to_rich())

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
