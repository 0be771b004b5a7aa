"""Run the trtforge CLI in-process, the way the tests read it: exit code, stdout, stderr."""

from __future__ import annotations

import signal

from typer.testing import CliRunner

from trtforge.cli import app

_runner = CliRunner()


def cli(*args: object) -> tuple[int, str, str]:
    result = _runner.invoke(app, [str(arg) for arg in args])
    return result.exit_code, result.stdout, result.stderr


def as_foreground_job() -> None:
    """``preexec_fn`` of a CLI process a test interrupts with SIGINT: the signal as a terminal's
    foreground job gets it. A suite started as a background job (``make test &``) has SIGINT
    ignored, which its children inherit and trtforge keeps (a script's background job ignores
    Ctrl-C on purpose): those tests would then test nothing of Ctrl-C."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
