"""The reporter: in a CI log (stderr not a terminal) log lines are plain text written without
importing rich, and what needs rich (a table) still renders; in a terminal rich prints them."""

from __future__ import annotations

import os
import re
import subprocess
import sys

#: a reporter's lines and a table, then which rich modules the process imported
_REPORT = """
import sys
from trtforge.console import Reporter
reporter = Reporter()
reporter.info("plain [bold]not markup[/] :smile: stays")
reporter.warn("careful")
lines_only = sorted(name for name in sys.modules if name.split(".")[0] == "rich")
from rich.table import Table
table = Table(title="t")
table.add_column("spec")
table.add_row("a.yaml")
reporter.render(table)
print(",".join(lines_only))
"""


def _report(**env: str) -> subprocess.CompletedProcess[str]:
    clean = {key: value for key, value in os.environ.items() if key not in ("TTY_COMPATIBLE", "FORCE_COLOR")}
    return subprocess.run(
        [sys.executable, "-c", _REPORT], capture_output=True, text=True, env={**clean, **env}, check=True
    )


def test_log_lines_are_plain_text_without_rich_and_tables_still_render() -> None:
    done = _report(FORCE_COLOR="")  # set but empty: rich decides by isatty, and stderr is a pipe
    assert done.stdout.strip() == ""  # no rich module was imported for the log lines
    lines = done.stderr.splitlines()
    assert re.fullmatch(r"\d\d:\d\d:\d\d plain \[bold\]not markup\[/\] :smile: stays", lines[0])
    assert re.fullmatch(r"\d\d:\d\d:\d\d warning: careful", lines[1])
    assert "a.yaml" in done.stderr and "\x1b[" not in done.stderr


def test_a_forced_terminal_gets_rich() -> None:
    done = _report(TTY_COMPATIBLE="1")
    assert "rich.console" in done.stdout.split(",")
    assert "plain [bold]not markup[/]" in done.stderr  # markup off: the text as given
