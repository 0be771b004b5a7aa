"""Run the trtforge CLI in-process, the way the tests read it: exit code, stdout, stderr."""

from __future__ import annotations

from typer.testing import CliRunner

from trtforge.cli import app

_runner = CliRunner()


def cli(*args: object) -> tuple[int, str, str]:
    result = _runner.invoke(app, [str(arg) for arg in args])
    return result.exit_code, result.stdout, result.stderr
