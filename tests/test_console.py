"""The reporter: in a CI log (stderr not a terminal) log lines and tables are plain text written
without importing rich; in a terminal rich prints them."""

from __future__ import annotations

import os
import re
import subprocess
import sys

#: a reporter's lines and a table, then which rich modules the process imported
_REPORT = """
import sys
from trtforge.console import Reporter, Styled, Table
reporter = Reporter()
reporter.info("plain [bold]not markup[/] :smile: stays")
reporter.warn("careful")
table = Table(("results of ", Styled("[ci]", "bold")), ("spec", "seconds"), right=frozenset({"seconds"}))
table.add_row("a.yaml", Styled("12.5", "green"))
table.add_row("long-name.yaml", "3")
reporter.render(table)
print(",".join(sorted(name for name in sys.modules if name.split(".")[0] == "rich")))
"""


def _report(**env: str) -> subprocess.CompletedProcess[str]:
    decides = ("TTY_COMPATIBLE", "FORCE_COLOR", "NO_COLOR", "TERM")  # what rich reads to pick colours
    clean = {key: value for key, value in os.environ.items() if key not in decides}
    return subprocess.run(
        [sys.executable, "-c", _REPORT], capture_output=True, text=True, env={**clean, **env}, check=True
    )


def test_log_lines_and_tables_are_plain_text_without_rich() -> None:
    done = _report(FORCE_COLOR="")  # set but empty: rich decides by isatty, and stderr is a pipe
    assert done.stdout.strip() == ""  # no rich module was imported, for the lines or the table
    lines = [line[9:] for line in done.stderr.splitlines()]  # after the "HH:MM:SS " stamp
    assert all(re.match(r"\d\d:\d\d:\d\d ", line) for line in done.stderr.splitlines())
    assert lines == [
        "plain [bold]not markup[/] :smile: stays",
        "warning: careful",
        "results of [ci]",
        "  spec            seconds",
        "  a.yaml             12.5",  # numbers aligned right, each column as wide as its widest cell
        "  long-name.yaml        3",
    ]


def test_a_forced_terminal_gets_rich() -> None:
    done = _report(TTY_COMPATIBLE="1")
    assert {"rich.console", "rich.table"} <= set(done.stdout.split(","))
    assert "plain [bold]not markup[/]" in done.stderr  # markup off: the text as given
    assert "results of \x1b[1m[ci]\x1b[0m" in done.stderr  # styled, and its text is text, not markup
    assert "\x1b[32m12.5\x1b[0m" in done.stderr and "│ long-name.yaml │" in done.stderr
