"""Run the trtforge CLI in-process, the way the tests read it: exit code, stdout, stderr."""

from __future__ import annotations

import ctypes
import signal

from typer.testing import CliRunner

from trtforge.cli import app

_runner = CliRunner()


def cli(*args: object) -> tuple[int, str, str]:
    result = _runner.invoke(app, [str(arg) for arg in args])
    return result.exit_code, result.stdout, result.stderr


#: prctl's option: the signal a process gets when the thread that started it ends (linux/prctl.h)
_PR_SET_PDEATHSIG = 1


def as_foreground_job() -> None:
    """``preexec_fn`` of a CLI process a test interrupts with SIGINT: the signal as a terminal's
    foreground job gets it. A suite started as a background job (``make test &``) has SIGINT
    ignored, which its children inherit and trtforge keeps (a script's background job ignores
    Ctrl-C on purpose): those tests would then test nothing of Ctrl-C. The process is also killed
    when the test process dies (a suite stopped by a timeout or SIGKILL runs no ``finally``): a
    ``serve`` left behind kept its port and its health loop running for good."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
